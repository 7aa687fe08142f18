//! Words in messages people read: counted ("1 copy is on loan", "3 copies are on loan"), and
//! what a client sent, shortened.

/// `n` copies, with the noun agreeing: "1 copy", "0 copies", "3 copies".
pub fn copies(n: impl Into<i64>) -> String {
    let n = n.into();
    if n == 1 {
        "1 copy".to_owned()
    } else {
        format!("{n} copies")
    }
}

/// The verb agreeing with `n` things: "is" for one, "are" otherwise.
pub fn is_are(n: impl Into<i64>) -> &'static str {
    if n.into() == 1 { "is" } else { "are" }
}

/// At most 64 characters of a value a client sent, to echo in a message (an id that is not one
/// may be a whole request body long).
pub fn excerpt(value: &str) -> String {
    match value.char_indices().nth(64) {
        Some((end, _)) => format!("{}…", &value[..end]),
        None => value.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_copy_is_singular_and_every_other_count_plural() {
        assert_eq!(format!("{} {} on loan", copies(1), is_are(1)), "1 copy is on loan");
        assert_eq!(format!("{} {} on loan", copies(0), is_are(0)), "0 copies are on loan");
        assert_eq!(
            format!("{} {} on loan", copies(3_i32), is_are(3_i32)),
            "3 copies are on loan"
        );
    }
}
