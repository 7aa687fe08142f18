//! Counted words in messages people read: "1 copy is on loan", "3 copies are on loan".

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
