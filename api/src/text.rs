//! [`Text`]: a JSON string and nothing else. poem-openapi's `String` also accepts numbers and
//! booleans (turning `42` into `"42"`); request fields use `Text` so a wrong type is a 400.

use std::borrow::Cow;
use std::ops::Deref;

use poem_openapi::registry::MetaSchemaRef;
use poem_openapi::types::{ParseError, ParseFromJSON, ParseResult, ToJSON, Type};
use serde_json::Value;

#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize, sqlx::Type)]
#[serde(transparent)]
#[sqlx(transparent)]
pub struct Text(pub String);

impl Type for Text {
    const IS_REQUIRED: bool = true;
    type RawValueType = String;
    type RawElementValueType = String;

    fn name() -> Cow<'static, str> {
        String::name()
    }

    fn schema_ref() -> MetaSchemaRef {
        String::schema_ref()
    }

    fn as_raw_value(&self) -> Option<&String> {
        Some(&self.0)
    }

    fn raw_element_iter<'a>(&'a self) -> Box<dyn Iterator<Item = &'a String> + 'a> {
        Box::new(std::iter::once(&self.0))
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl ParseFromJSON for Text {
    fn parse_from_json(value: Option<Value>) -> ParseResult<Self> {
        match value {
            Some(Value::String(text)) => Ok(Self(text)),
            other => Err(ParseError::expected_type(other.unwrap_or_default())),
        }
    }
}

impl ToJSON for Text {
    fn to_json(&self) -> Option<Value> {
        Some(Value::String(self.0.clone()))
    }
}

impl Deref for Text {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl From<&str> for Text {
    fn from(text: &str) -> Self {
        Self(text.to_owned())
    }
}

impl From<Text> for String {
    fn from(text: Text) -> Self {
        text.0
    }
}

/// An `https://` URL with a host and no whitespace or control characters (what clients may
/// safely put in a link or an `<img>`).
pub fn is_https_url(url: &str) -> bool {
    let host = url.strip_prefix("https://").unwrap_or_default();
    !host.is_empty() && !host.starts_with('/') && !url.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// A name as people will see it (a group title, a display name): NFC, without bidi controls
/// (U+202A–U+202E, U+2066–U+2069: `admin\u{202e}gnp.exe` must not read as `adminexe.png`),
/// trimmed. `None` when nothing visible is left (whitespace, zero-width and other invisible
/// characters only). Message text is never passed through this: it stays as sent.
pub fn clean_name(raw: &str) -> Option<String> {
    use unicode_normalization::UnicodeNormalization;
    let bidi_control = |c: char| matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}');
    let name: String = raw.nfc().filter(|&c| !bidi_control(c)).collect();
    let name = name.trim();
    name.chars().any(|c| !invisible(c)).then(|| name.to_owned())
}

/// Whitespace, controls, and the format characters that render as nothing (zero-width space,
/// joiners, marks, word joiner, BOM, soft hyphen, the combining grapheme joiner).
fn invisible(c: char) -> bool {
    c.is_whitespace()
        || c.is_control()
        || matches!(
            c,
            '\u{00AD}' | '\u{034F}' | '\u{180E}' | '\u{200B}'..='\u{200F}' | '\u{2060}'..='\u{2064}' | '\u{FEFF}'
        )
}

#[cfg(test)]
mod tests {
    use super::clean_name;

    #[test]
    fn names_are_nfc_without_bidi_controls_and_never_invisible() {
        assert_eq!(clean_name("admin\u{202e}gnp.exe").as_deref(), Some("admingnp.exe"));
        assert_eq!(clean_name(" e\u{301}cole \u{2066}x\u{2069} ").as_deref(), Some("\u{e9}cole x"));
        for invisible in ["", "   ", "\u{200b}", "\u{200b}\u{feff}\u{2060}", "\u{202e}\u{200d}"] {
            assert_eq!(clean_name(invisible), None, "{invisible:?}");
        }
        assert_eq!(clean_name("Zo\u{eb} \u{1f600}").as_deref(), Some("Zo\u{eb} \u{1f600}"));
    }
}
