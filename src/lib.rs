#![deny(clippy::all)]
use napi_derive::napi;

#[napi]
pub fn ping() -> u32 { 1 }

#[cfg(test)]
mod t { #[test] fn works() { assert_eq!(super::ping(), 1); } }
