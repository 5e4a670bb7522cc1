//! Id newtypes. Each wraps a UUID, so its text form can only contain hex digits and dashes:
//! safe to place in a NATS subject or a URL without escaping.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, schemars::JsonSchema)]
        #[serde(transparent)]
        pub struct $name(Uuid);

        impl $name {
            pub const fn from_uuid(id: Uuid) -> Self {
                Self(id)
            }

            pub const fn as_uuid(&self) -> &Uuid {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0.hyphenated(), f)
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self)
            }
        }

        impl From<Uuid> for $name {
            fn from(id: Uuid) -> Self {
                Self(id)
            }
        }

        impl From<$name> for Uuid {
            fn from(id: $name) -> Uuid {
                id.0
            }
        }
    };
}

uuid_id!(
    /// A user, identified by the JWT `sub` claim.
    UserId
);
uuid_id!(
    /// A conversation (direct or group).
    ConversationId
);
uuid_id!(
    /// A message.
    MessageId
);
uuid_id!(
    /// A domain event; also its NATS message id, which makes JetStream drop duplicates.
    EventId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_id_round_trips_through_text_and_rejects_subject_wildcards() {
        let id: UserId = "0191d0c2-6c3e-7f00-8000-000000000001".parse().expect("valid uuid");
        assert_eq!(id.to_string(), "0191d0c2-6c3e-7f00-8000-000000000001");
        for bad in ["*", ">", "a.b", "", "not-a-uuid"] {
            assert!(bad.parse::<UserId>().is_err(), "{bad:?} must not parse");
        }
    }
}
