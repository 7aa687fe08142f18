//! Cursor pagination shared by the list calls: page sizes and opaque cursors.
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Page size when the caller asks for none.
pub const DEFAULT_PAGE_SIZE: u64 = 20;
/// The largest page a caller may ask for.
pub const MAX_PAGE_SIZE: u64 = 100;

/// A page-size or cursor the caller got wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PagingError {
    PageSize,
    Cursor,
}

impl std::fmt::Display for PagingError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field(), self.description())
    }
}

impl std::error::Error for PagingError {}

impl PagingError {
    /// The request field at fault.
    pub fn field(&self) -> &'static str {
        match self {
            PagingError::PageSize => "page_size",
            PagingError::Cursor => "page_token",
        }
    }

    /// What is wrong with it.
    pub fn description(&self) -> String {
        match self {
            PagingError::PageSize => format!("must be between 1 and {MAX_PAGE_SIZE}"),
            PagingError::Cursor => "not a cursor this service issued".into(),
        }
    }

    /// The refusal a gRPC service answers with.
    pub fn to_status(&self) -> tonic::Status {
        crate::grpc::invalid_field(self.field(), self.description())
    }
}

/// `0` means the default; 1..=100 as asked.
///
/// # Errors
/// Negative or above 100.
pub fn page_size(requested: i32) -> Result<u64, PagingError> {
    match requested {
        0 => Ok(DEFAULT_PAGE_SIZE),
        n if n > 0 && (n as u64) <= MAX_PAGE_SIZE => Ok(n as u64),
        _ => Err(PagingError::PageSize),
    }
}

const SEPARATOR: char = '\u{1f}';

/// An opaque cursor holding the sort key of the last row of a page.
pub fn encode_cursor(parts: &[&str]) -> String {
    URL_SAFE_NO_PAD.encode(parts.join(&SEPARATOR.to_string()))
}

/// The sort key inside a cursor; `None` for an empty token (the first page).
///
/// # Errors
/// Not a cursor of `parts` parts.
pub fn decode_cursor(token: &str, parts: usize) -> Result<Option<Vec<String>>, PagingError> {
    if token.is_empty() {
        return Ok(None);
    }
    let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| PagingError::Cursor)?;
    let text = String::from_utf8(bytes).map_err(|_| PagingError::Cursor)?;
    let values: Vec<String> = text.split(SEPARATOR).map(str::to_owned).collect();
    if values.len() != parts {
        return Err(PagingError::Cursor);
    }
    Ok(Some(values))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_sizes_are_bounded() {
        assert_eq!(page_size(0), Ok(20));
        assert_eq!(page_size(1), Ok(1));
        assert_eq!(page_size(100), Ok(100));
        assert_eq!(page_size(101), Err(PagingError::PageSize));
        assert_eq!(page_size(-1), Err(PagingError::PageSize));
    }

    #[test]
    fn cursors_round_trip_and_reject_forgeries() {
        let c = encode_cursor(&["Dune", "0191"]);
        assert_eq!(decode_cursor(&c, 2), Ok(Some(vec!["Dune".into(), "0191".into()])));
        assert_eq!(decode_cursor("", 2), Ok(None));
        assert_eq!(decode_cursor("!!", 2), Err(PagingError::Cursor));
        assert_eq!(decode_cursor(&c, 1), Err(PagingError::Cursor));
    }
}
