//! Sample values shared by the OpenAPI examples, so every example tells the same story:
//! Alice and Bob talking in one conversation.

use chrono::{DateTime, Utc};
use uuid::Uuid;

pub const ALICE: Uuid = Uuid::from_u128(0x0191d0c2_6c3e_7f00_8000_00000000a11c);
pub const BOB: Uuid = Uuid::from_u128(0x0191d0c2_6c3e_7f00_8000_000000000b0b);
pub const CONVERSATION: Uuid = Uuid::from_u128(0x0191d0c3_1a2b_7c00_8000_0000000c0117);
pub const MESSAGE: Uuid = Uuid::from_u128(0x0191d0c4_5e6f_7a00_8000_00000000e55a);

pub fn time() -> DateTime<Utc> {
    DateTime::from_timestamp(1_790_000_000, 0).unwrap_or_default()
}
