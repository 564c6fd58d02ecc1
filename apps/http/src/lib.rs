//! The pure part of the Flint HTTP example: parsing HTTP/1.x requests and
//! building the responses, with no I/O, so it is tested on the host. The
//! server's event loop is in `main.rs`.
#![no_std]
#![warn(missing_docs)]

extern crate alloc;
#[cfg(test)]
extern crate std;

pub mod date;
pub mod request;
pub mod response;

pub use request::{parse, Method, Parse, Request};
pub use response::{respond, Response};
