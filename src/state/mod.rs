//! timeskew's state inside a target: finding what an earlier timeskew left there, publishing new
//! parameters into it, and reporting it.

pub(crate) mod discover;
pub(crate) mod publish;
pub(crate) mod status;

pub(crate) use discover::{Existing, find, is_our_jump, jump_in_image};
