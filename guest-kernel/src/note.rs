//! The `FLINT` ELF note (ABI.md section 1): name `"FLINT"`, type
//! [`hypercall_abi::NOTE_TYPE`], a 4-byte little-endian descriptor holding
//! [`hypercall_abi::ABI_VERSION`]. The linker script keeps the section and
//! announces it with a `PT_NOTE`; the monitor refuses images without it.

#[cfg(target_os = "none")]
core::arch::global_asm!(
    ".pushsection .note.flint, \"a\", @note",
    ".balign 4",
    ".long {namesz}", // name size, including the NUL
    ".long {descsz}", // descriptor size
    ".long {ty}",     // note type
    ".asciz \"FLINT\"",
    ".balign 4", // the name is padded to 4 bytes
    ".long {version}",
    ".balign 4",
    ".popsection",
    namesz = const hypercall_abi::NOTE_NAME.len() + 1,
    descsz = const hypercall_abi::NOTE_DESC_SIZE,
    ty = const hypercall_abi::NOTE_TYPE,
    version = const hypercall_abi::ABI_VERSION,
);

// The name string in the asm above must be the ABI's.
const _: () = {
    let name = hypercall_abi::NOTE_NAME.as_bytes();
    assert!(name.len() == 5);
    assert!(name[0] == b'F' && name[1] == b'L' && name[2] == b'I' && name[3] == b'N');
    assert!(name[4] == b'T');
};
