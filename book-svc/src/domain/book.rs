//! A book as the catalogue accepts it: values are parsed once at the edge and are valid after.

/// A field that failed validation, named as the client sent it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ValidationError {
    pub field: &'static str,
    pub message: String,
}

impl ValidationError {
    fn new(field: &'static str, message: impl Into<String>) -> Self {
        Self {
            field,
            message: message.into(),
        }
    }
}

const MAX_TEXT: usize = 500;

fn non_empty(field: &'static str, value: &str) -> Result<String, ValidationError> {
    let trimmed = value.trim();
    if trimmed.is_empty() {
        return Err(ValidationError::new(field, "must not be empty"));
    }
    if trimmed.chars().count() > MAX_TEXT {
        return Err(ValidationError::new(
            field,
            format!("must be at most {MAX_TEXT} characters"),
        ));
    }
    Ok(trimmed.to_owned())
}

/// A non-empty title of at most 500 characters, trimmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Title(String);

impl Title {
    /// # Errors
    /// Empty or too long.
    pub fn parse(value: &str) -> Result<Self, ValidationError> {
        non_empty("title", value).map(Self)
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A non-empty author of at most 500 characters, trimmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Author(String);

impl Author {
    /// # Errors
    /// Empty or too long.
    pub fn parse(value: &str) -> Result<Self, ValidationError> {
        non_empty("author", value).map(Self)
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An ISBN-10 or ISBN-13 with a valid check digit, kept as digits only (an ISBN-10 may end in X).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Isbn(String);

impl Isbn {
    /// Accepts hyphens and spaces between digits.
    ///
    /// # Errors
    /// Not 10 or 13 digits, or a wrong check digit.
    pub fn parse(value: &str) -> Result<Self, ValidationError> {
        let compact: String = value
            .chars()
            .filter(|c| *c != '-' && *c != ' ')
            .collect::<String>()
            .to_ascii_uppercase();
        let valid = match compact.len() {
            10 => isbn10_is_valid(&compact),
            13 => isbn13_is_valid(&compact),
            _ => return Err(ValidationError::new("isbn", "must have 10 or 13 digits")),
        };
        if valid {
            Ok(Self(compact))
        } else {
            Err(ValidationError::new("isbn", "check digit does not match"))
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn isbn10_is_valid(s: &str) -> bool {
    let mut sum = 0;
    for (i, c) in s.chars().enumerate() {
        let digit = match (c, i) {
            ('X', 9) => 10,
            (c, _) => match c.to_digit(10) {
                Some(d) => d,
                None => return false,
            },
        };
        sum += digit * (10 - i as u32);
    }
    sum % 11 == 0
}

fn isbn13_is_valid(s: &str) -> bool {
    let mut sum = 0;
    for (i, c) in s.chars().enumerate() {
        let Some(digit) = c.to_digit(10) else {
            return false;
        };
        sum += if i % 2 == 0 { digit } else { digit * 3 };
    }
    sum % 10 == 0
}

/// A number of copies, 0..=100,000.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Copies(i32);

impl Copies {
    pub const MAX: i32 = 100_000;

    /// # Errors
    /// Negative or above 100,000.
    pub fn parse(field: &'static str, value: i32) -> Result<Self, ValidationError> {
        if (0..=Self::MAX).contains(&value) {
            Ok(Self(value))
        } else {
            Err(ValidationError::new(
                field,
                format!("must be between 0 and {}", Self::MAX),
            ))
        }
    }
    pub fn get(self) -> i32 {
        self.0
    }
}

/// A new book, valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BookDraft {
    pub isbn: Option<Isbn>,
    pub title: Title,
    pub author: Author,
    pub total_copies: Copies,
}

impl BookDraft {
    /// # Errors
    /// The first invalid field.
    pub fn parse(isbn: Option<&str>, title: &str, author: &str, total_copies: i32) -> Result<Self, ValidationError> {
        Ok(Self {
            isbn: isbn.filter(|s| !s.trim().is_empty()).map(Isbn::parse).transpose()?,
            title: Title::parse(title)?,
            author: Author::parse(author)?,
            total_copies: Copies::parse("totalCopies", total_copies)?,
        })
    }
}

/// Changes to a book; `None` leaves a field as it is. `isbn: Some(None)` removes the ISBN.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BookEdit {
    pub isbn: Option<Option<Isbn>>,
    pub title: Option<Title>,
    pub author: Option<Author>,
    pub total_copies: Option<Copies>,
}

impl BookEdit {
    /// # Errors
    /// The first invalid field.
    pub fn parse(
        isbn: Option<&str>,
        title: Option<&str>,
        author: Option<&str>,
        total_copies: Option<i32>,
    ) -> Result<Self, ValidationError> {
        Ok(Self {
            isbn: isbn
                .map(|s| {
                    if s.trim().is_empty() {
                        Ok(None)
                    } else {
                        Isbn::parse(s).map(Some)
                    }
                })
                .transpose()?,
            title: title.map(Title::parse).transpose()?,
            author: author.map(Author::parse).transpose()?,
            total_copies: total_copies.map(|n| Copies::parse("totalCopies", n)).transpose()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn isbn13_with_hyphens_is_accepted_and_compacted() {
        assert_eq!(Isbn::parse("978-0-306-40615-7").unwrap().as_str(), "9780306406157");
    }

    #[test]
    fn isbn10_with_x_check_digit_is_accepted() {
        assert_eq!(Isbn::parse("0-8044-2957-x").unwrap().as_str(), "080442957X");
    }

    #[test]
    fn a_wrong_check_digit_is_refused() {
        assert_eq!(Isbn::parse("9780306406158").unwrap_err().field, "isbn");
        assert!(Isbn::parse("0306406153").is_err());
    }

    #[test]
    fn isbn_of_another_length_or_with_letters_is_refused() {
        assert!(Isbn::parse("12345").is_err());
        assert!(Isbn::parse("97803064061A7").is_err());
        assert!(Isbn::parse("X306406152").is_err());
    }

    #[test]
    fn blank_title_or_author_is_refused_by_name() {
        assert_eq!(BookDraft::parse(None, "  ", "Kim", 1).unwrap_err().field, "title");
        assert_eq!(BookDraft::parse(None, "Dune", "", 1).unwrap_err().field, "author");
    }

    #[test]
    fn copies_are_bounded() {
        assert!(Copies::parse("totalCopies", -1).is_err());
        assert!(Copies::parse("totalCopies", 100_001).is_err());
        assert_eq!(Copies::parse("totalCopies", 100_000).unwrap().get(), 100_000);
        assert_eq!(Copies::parse("totalCopies", 0).unwrap().get(), 0);
    }

    #[test]
    fn a_blank_isbn_on_create_means_none_and_on_edit_means_remove() {
        assert_eq!(BookDraft::parse(Some(""), "Dune", "Herbert", 1).unwrap().isbn, None);
        assert_eq!(BookEdit::parse(Some(""), None, None, None).unwrap().isbn, Some(None));
        assert_eq!(BookEdit::parse(None, None, None, None).unwrap(), BookEdit::default());
    }

    #[test]
    fn titles_are_trimmed() {
        assert_eq!(Title::parse("  Dune ").unwrap().as_str(), "Dune");
        assert!(Title::parse(&"x".repeat(501)).is_err());
    }
}
