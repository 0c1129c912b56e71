//! Bounds on what a request may carry, checked before anything reaches the store: free
//! texts must hold visible characters and have a length cap; ids, trace ids and event types
//! have a shape; instants and durations have a range (no overflow reaches arithmetic).
//! Each check answers with a message naming the field.

use super::Millis;

/// Characters that take no space: zero-width and joiner characters, bidi controls, the
/// soft hyphen, the BOM. A text of these and whitespace alone says nothing.
fn invisible(c: char) -> bool {
    c.is_whitespace()
        || c.is_control()
        || matches!(c,
            '\u{00AD}' | '\u{034F}' | '\u{061C}' | '\u{115F}' | '\u{1160}' | '\u{17B4}'
            | '\u{17B5}' | '\u{180B}'..='\u{180F}' | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{206F}' | '\u{3164}'
            | '\u{FE00}'..='\u{FE0F}' | '\u{FEFF}' | '\u{FFA0}' | '\u{E0000}'..='\u{E007F}')
}

/// A free text: at least one visible character, at most `max` characters.
pub fn text(field: &str, value: &str, max: usize) -> Result<(), String> {
    text_problem(value, max).map_or(Ok(()), |problem| Err(format!("{field} {problem}")))
}

/// What is wrong with a free text, said without its field's name.
pub fn text_problem(value: &str, max: usize) -> Option<String> {
    if !value.chars().any(|c| !invisible(c)) {
        return Some("must contain visible characters".into());
    }
    let n = value.chars().count();
    (n > max).then(|| format!("must be at most {max} characters (got {n})"))
}

/// An id (production, trace, DLQ message, alarm subject part): 1 to 128 characters of
/// letters, digits and `-_.:`.
pub fn id(field: &str, value: &str) -> Result<(), String> {
    let ok = (1..=128).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{field} must be 1-128 characters of letters, digits and -_.: (got {:?})",
            value.chars().take(40).collect::<String>()
        ))
    }
}

/// The latest instant accepted: 9999-12-31T23:59:59.999Z.
pub const MAX_INSTANT: Millis = 253_402_300_799_999;

/// An instant in epoch milliseconds, between 1970 and 9999.
pub fn instant(field: &str, ms: Millis) -> Result<Millis, String> {
    if (0..=MAX_INSTANT).contains(&ms) {
        Ok(ms)
    } else {
        Err(format!(
            "{field} must be between 0 (1970) and {MAX_INSTANT} (9999) epoch milliseconds (got {ms})"
        ))
    }
}

/// A count in `1..=max`.
pub fn count(field: &str, n: usize, max: usize) -> Result<usize, String> {
    if (1..=max).contains(&n) {
        Ok(n)
    } else {
        Err(format!("{field} must be between 1 and {max} (got {n})"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_text_needs_a_visible_character_and_a_cap() {
        for blank in [
            "",
            "  ",
            "\u{200B}",
            "\u{FEFF}\u{200D} \u{2060}",
            "\u{202E}\n",
        ] {
            assert!(text("title", blank, 10).is_err(), "{blank:?}");
        }
        assert!(text("title", "Tides", 10).is_ok());
        assert!(text("title", "潮汐", 10).is_ok());
        assert_eq!(
            text("title", &"x".repeat(11), 10).unwrap_err(),
            "title must be at most 10 characters (got 11)"
        );
    }

    #[test]
    fn ids_and_instants_have_a_shape_and_a_range() {
        assert!(id("trace", "0192f3c4a1b27e3f").is_ok());
        assert!(id("id", "0192f3c4-a1b2-7e3f-8000-000000000001").is_ok());
        for bad in ["", "a b", "x/../y", &"a".repeat(129), "é"] {
            assert!(id("trace", bad).is_err(), "{bad:?}");
        }
        assert!(instant("until", i64::MIN).is_err());
        assert!(instant("until", MAX_INSTANT + 1).is_err());
        assert_eq!(instant("until", 0), Ok(0));
        assert!(count("limit", 0, 1000).is_err() && count("limit", 1001, 1000).is_err());
    }
}
