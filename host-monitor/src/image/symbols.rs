//! Names guest code addresses from the image's `.symtab`, for diagnoses.

use elf::abi::STT_FUNC;
use elf::endian::AnyEndian;
use elf::ElfBytes;

/// Looks up the function symbol that contains an address.
pub struct Symbolizer<'a> {
    bytes: &'a [u8],
}

impl<'a> Symbolizer<'a> {
    pub(super) fn new(bytes: &'a [u8]) -> Self {
        Symbolizer { bytes }
    }

    /// `name+0xoff` for the `STT_FUNC` symbol containing `addr`, demangled,
    /// or `None` if the image has no such symbol (or no symbol table).
    pub fn describe(&self, addr: u64) -> Option<String> {
        let file = ElfBytes::<AnyEndian>::minimal_parse(self.bytes).ok()?;
        let (symbols, names) = file.symbol_table().ok()??;
        let symbol = symbols.iter().find(|s| {
            s.st_symtype() == STT_FUNC && addr >= s.st_value && addr - s.st_value < s.st_size.max(1)
        })?;
        let raw = names.get(symbol.st_name as usize).ok()?;
        Some(format!(
            "{:#}+{:#x}",
            rustc_demangle::demangle(raw),
            addr - symbol.st_value
        ))
    }
}
