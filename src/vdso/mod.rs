//! The parsed vDSO image the rest of the crate uses: where its entry points are and which bytes
//! are code, with addresses as they are in the process the copy came from.
//!
//! The image is a copy of the vDSO *as mapped in memory* (file offset 0 at `base`), read from the
//! target. It is treated as hostile input: [`elf`] bounds-checks every offset and size taken from
//! it, and a malformed image yields `Err`, never a panic.

mod elf;
#[cfg(test)]
mod own;

/// A dynamic symbol of the vDSO.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Symbol {
    /// Exact symbol name, e.g. `__vdso_clock_gettime`.
    pub name: String,
    /// Absolute address in the process the image was read from.
    pub addr: u64,
    /// `st_size` (0 when the ELF does not say).
    pub size: u64,
}

/// The ELF machine a vDSO must be built for, and its name for messages: the architecture
/// timeskew injects into (`arch::Arch::MACHINE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Machine {
    pub elf: u16,
    pub name: &'static str,
}

/// A parsed copy of a vDSO, with addresses as they are in the process it came from.
#[derive(Debug, Clone)]
pub struct VdsoImage {
    base: u64,
    bytes: Vec<u8>,
    symbols: Vec<Symbol>,
    exec_ranges: Vec<(u64, u64)>,
}

impl VdsoImage {
    /// Parses `bytes`, the vDSO as mapped at `base` in its process: a 64-bit little-endian ELF
    /// built for `machine`.
    pub fn parse(base: u64, bytes: Vec<u8>, machine: Machine) -> Result<VdsoImage, String> {
        // Every absolute address below is `base + offset` with `offset <= bytes.len()`.
        if base.checked_add(bytes.len() as u64).is_none() {
            return Err(format!(
                "a {}-byte image at {base:#x} would wrap around the address space",
                bytes.len()
            ));
        }
        let parsed = elf::Parsed::new(&bytes, machine)?;
        let symbols = parsed
            .dynamic_symbols()?
            .into_iter()
            .map(|(name, offset, size)| Symbol {
                name,
                addr: base + offset,
                size,
            })
            .collect();
        let exec_ranges = parsed
            .exec_ranges()?
            .into_iter()
            .map(|(offset, len)| (base + offset, len))
            .collect();
        Ok(VdsoImage {
            base,
            bytes,
            symbols,
            exec_ranges,
        })
    }

    /// Builds an image from already-known parts, for tests with synthetic code.
    #[cfg(test)]
    pub fn from_parts(
        base: u64,
        bytes: Vec<u8>,
        symbols: Vec<Symbol>,
        exec_ranges: Vec<(u64, u64)>,
    ) -> VdsoImage {
        VdsoImage {
            base,
            bytes,
            symbols,
            exec_ranges,
        }
    }

    /// Address of the image's first byte (the ELF header) in its process.
    pub fn base(&self) -> u64 {
        self.base
    }

    /// Length of the image in bytes.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// The raw bytes of the image.
    #[cfg(test)]
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The dynamic symbol called exactly `name`.
    pub fn symbol(&self, name: &str) -> Option<&Symbol> {
        self.symbols.iter().find(|s| s.name == name)
    }

    /// All dynamic symbols kept (defined, named, inside the image).
    #[cfg(test)]
    pub fn symbols(&self) -> &[Symbol] {
        &self.symbols
    }

    /// Executable ranges as `(absolute start, length)`, each lying inside the image.
    pub fn exec_ranges(&self) -> &[(u64, u64)] {
        &self.exec_ranges
    }

    /// `len` bytes at absolute address `addr`, if they all lie inside the image.
    pub fn slice(&self, addr: u64, len: usize) -> Option<&[u8]> {
        let start = usize::try_from(addr.checked_sub(self.base)?).ok()?;
        let end = start.checked_add(len)?;
        self.bytes.get(start..end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::{Arch, Native};

    pub(super) const NATIVE: Machine = Native::MACHINE;

    /// The hooked entries of a real vDSO.
    pub(super) const ENTRIES: [&str; 3] =
        ["__vdso_clock_gettime", "__vdso_gettimeofday", "__vdso_time"];

    /// This test process's own vDSO.
    pub(super) fn live() -> VdsoImage {
        VdsoImage::of_current_process().expect("the test process has a parsable vDSO")
    }

    /// Everything an `Ok` image promises: symbols and ranges lie inside its bytes.
    pub(super) fn assert_consistent(image: &VdsoImage) {
        for s in image.symbols() {
            let size = usize::try_from(s.size).expect("size fits usize");
            assert!(
                image.slice(s.addr, size).is_some(),
                "{s:?} outside the image"
            );
        }
        for &(start, len) in image.exec_ranges() {
            let len = usize::try_from(len).expect("len fits usize");
            assert!(
                image.slice(start, len).is_some(),
                "range {start:#x}+{len:#x} outside"
            );
        }
    }

    #[test]
    fn live_vdso_has_the_entries_we_patch() {
        let image = live();
        assert!(image.len() >= 4096 && image.len().is_multiple_of(4096));
        assert_eq!(&image.bytes()[..4], b"\x7fELF");
        assert!(!image.exec_ranges().is_empty());
        for name in ENTRIES {
            let sym = image
                .symbol(name)
                .unwrap_or_else(|| panic!("{name} missing"));
            assert!(sym.size > 0, "{name} has size 0");
            assert!(
                image
                    .exec_ranges()
                    .iter()
                    .any(|&(s, l)| sym.addr >= s && sym.addr + sym.size <= s + l),
                "{name} is not inside an executable range"
            );
        }
        // Exact names only: a prefix or an alias without the prefix is a different symbol.
        assert!(image.symbol("__vdso_clock").is_none());
        assert!(image.symbol("__vdso_clock_gettimex").is_none());
        if let Some(alias) = image.symbol("clock_gettime") {
            assert_eq!(
                alias.addr,
                image.symbol("__vdso_clock_gettime").unwrap().addr
            );
        }
        assert_consistent(&image);
    }

    #[test]
    fn symbols_are_absolute_addresses() {
        let image = live();
        let base = image.base();
        let sym = image.symbol("__vdso_clock_gettime").unwrap();
        assert!(sym.addr > base && sym.addr < base + image.len() as u64);
        // The same bytes reparsed at another base move every address by the same amount.
        let moved = VdsoImage::parse(0x1000_0000, image.bytes().to_vec(), NATIVE).unwrap();
        let moved_sym = moved.symbol("__vdso_clock_gettime").unwrap();
        assert_eq!(moved_sym.addr - 0x1000_0000, sym.addr - base);
        assert_eq!(moved_sym.size, sym.size);
    }

    #[test]
    fn image_wrapping_the_address_space_is_refused() {
        let bytes = live().bytes().to_vec();
        let err = VdsoImage::parse(u64::MAX - 4095, bytes, NATIVE).unwrap_err();
        assert!(err.contains("wrap"), "{err}");
    }

    #[test]
    fn slice_is_bounds_checked() {
        let image = live();
        let base = image.base();
        let len = image.len();
        assert_eq!(image.slice(base, 4), Some(&b"\x7fELF"[..]));
        assert_eq!(image.slice(base, len).map(<[u8]>::len), Some(len));
        assert!(image.slice(base, len + 1).is_none());
        assert!(image.slice(base + len as u64, 1).is_none());
        assert_eq!(image.slice(base + len as u64, 0), Some(&[][..]));
        assert!(image.slice(base - 1, 1).is_none());
        assert!(image.slice(u64::MAX, 2).is_none());
        assert!(image.slice(base, usize::MAX).is_none());
    }
}
