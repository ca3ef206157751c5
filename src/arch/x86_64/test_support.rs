//! Test helpers shared by the x86_64 unit tests: the live vDSO, synthetic images, decoding.

use iced_x86::{Decoder, DecoderOptions, Instruction};

use crate::vdso::{Symbol, VdsoImage};

/// The hooked entries of a real vDSO.
pub(super) const ENTRIES: [&str; 3] =
    ["__vdso_clock_gettime", "__vdso_gettimeofday", "__vdso_time"];

/// Where synthetic images are "mapped".
pub(super) const BASE: u64 = 0x7f00_1234_0000;

/// push rbp; mov rbp,rsp; push r14; push rbx — a 6-byte window.
pub(super) const PROLOGUE: [u8; 7] = [0x55, 0x48, 0x89, 0xe5, 0x41, 0x56, 0x53];

/// This test process's own vDSO.
pub(super) fn live() -> VdsoImage {
    VdsoImage::of_current_process().expect("the test process has a parsable vDSO")
}

/// Every instruction of `code`, decoded at `ip`.
pub(super) fn decode_all(code: &[u8], ip: u64) -> Vec<Instruction> {
    Decoder::with_ip(64, code, ip, DecoderOptions::NONE)
        .into_iter()
        .collect()
}

/// An image whose code is `code` (padded with nops), with `symbols` as (name, offset, size).
pub(super) fn synth(code: &[u8], symbols: &[(&str, u64, u64)]) -> VdsoImage {
    let mut bytes = code.to_vec();
    bytes.resize(bytes.len().max(256), 0x90);
    let len = bytes.len() as u64;
    let symbols = symbols
        .iter()
        .map(|&(name, off, size)| Symbol {
            name: name.into(),
            addr: BASE + off,
            size,
        })
        .collect();
    VdsoImage::from_parts(BASE, bytes, symbols, vec![(BASE, len)])
}
