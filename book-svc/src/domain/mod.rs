//! The catalogue's rules, with no I/O: what a valid book is, and how stock may change.
mod book;
mod stock;

pub use book::{Author, BookDraft, BookEdit, Copies, Isbn, Title, ValidationError};
pub use stock::{Allocation, StockError, allocate, available_after_resize, can_reserve};
