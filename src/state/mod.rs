//! timeskew's state inside the target: the data page (its format and seqlock writer) and
//! finding what an earlier timeskew left there.

pub(crate) mod data_page;
pub(crate) mod discover;

pub(crate) use discover::{Existing, find, is_our_jump, jump_in_image};
