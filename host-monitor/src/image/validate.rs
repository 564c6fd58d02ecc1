//! Every rule of ABI.md section 1, checked before the guest runs.

use super::Segment;
use elf::abi;
use elf::endian::AnyEndian;
use elf::file::Class;
use elf::ElfBytes;
use hypercall_abi::{ABI_VERSION, IMAGE_BASE_MIN, NOTE_DESC_SIZE, NOTE_NAME, NOTE_TYPE, PAGE_SIZE};
use std::path::PathBuf;

/// Why an image cannot be run.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The file could not be read.
    #[error("{}: cannot read the image: {source}", path.display())]
    Read {
        /// The image path.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The file breaks a rule of ABI.md section 1.
    #[error("{}: not a valid Flint image: {problem}", path.display())]
    Invalid {
        /// The image path.
        path: PathBuf,
        /// The rule it breaks.
        problem: Problem,
    },
}

/// One broken rule; each message names what is wrong with the file.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Problem {
    #[error("{0}")]
    Parse(String),
    #[error("e_phnum is 0xffff (PN_XNUM); a Flint image has fewer than 65535 program headers")]
    TooManyProgramHeaders,
    #[error("ELF class is 32-bit; Flint images are ELF64")]
    NotElf64,
    #[error("ELF is big-endian; Flint images are little-endian")]
    BigEndian,
    #[error("ELF machine is {0}, not x86-64 (EM_X86_64 = 62)")]
    WrongMachine(u16),
    #[error(
        "ELF type is {0}, not ET_EXEC: build a static, non-PIE executable (cargo xtask build)"
    )]
    NotExec(u16),
    #[error("no program headers")]
    NoProgramHeaders,
    #[error(
        "has a {0} segment: Flint images are static, with no interpreter, dynamic section or TLS"
    )]
    Forbidden(&'static str),
    #[error("segment {index} has p_vaddr {vaddr:#x} != p_paddr {paddr:#x}")]
    VaddrNotPaddr {
        index: usize,
        vaddr: u64,
        paddr: u64,
    },
    #[error("segment {index} at {vaddr:#x} is not 4 KiB aligned")]
    Unaligned { index: usize, vaddr: u64 },
    #[error(
        "segment {index}: p_offset {offset:#x} is not congruent to p_vaddr {vaddr:#x} modulo 4096"
    )]
    OffsetMisaligned {
        index: usize,
        offset: u64,
        vaddr: u64,
    },
    #[error("segment {index}: p_filesz {filesz:#x} is larger than p_memsz {memsz:#x}")]
    FileLargerThanMem {
        index: usize,
        filesz: u64,
        memsz: u64,
    },
    #[error("segment {index}: file bytes [{offset:#x}, +{filesz:#x}) lie past the end of the file ({file_len:#x} bytes)")]
    PastEndOfFile {
        index: usize,
        offset: u64,
        filesz: u64,
        file_len: u64,
    },
    #[error("segment {index} [{vaddr:#x}, +{memsz:#x}) is outside guest RAM [0x100000, {mem_size:#x}); a larger --mem may help if the image is big")]
    OutsideRam {
        index: usize,
        vaddr: u64,
        memsz: u64,
        mem_size: u64,
    },
    #[error("segment {index} is both writable and executable")]
    WriteAndExecute { index: usize },
    #[error("segments at {first:#x} and {second:#x} share a 4 KiB page")]
    SharedPage { first: u64, second: u64 },
    #[error("no loadable segment")]
    NoLoadSegment,
    #[error("no FLINT ABI note (name \"FLINT\", type 1): build the image with cargo xtask build")]
    MissingNote,
    #[error("FLINT note has a {0}-byte descriptor, not 4")]
    BadNote(usize),
    #[error("built for Flint ABI version {0}; this monitor speaks version {ABI_VERSION}")]
    WrongAbiVersion(u32),
    #[error("entry point {0:#x} is not inside an executable segment")]
    EntryNotExecutable(u64),
}

/// What validation learns about a good image.
pub(super) struct Checked {
    pub entry: u64,
    pub segments: Vec<Segment>,
}

/// Checks `bytes` against ABI.md section 1 for a guest of `mem_size` bytes.
pub(super) fn validate(bytes: &[u8], mem_size: u64) -> Result<Checked, Problem> {
    let file = ElfBytes::<AnyEndian>::minimal_parse(bytes).map_err(parse_problem)?;
    let header = &file.ehdr;
    if header.class != Class::ELF64 {
        return Err(Problem::NotElf64);
    }
    if header.endianness != AnyEndian::Little {
        return Err(Problem::BigEndian);
    }
    if header.e_machine != abi::EM_X86_64 {
        return Err(Problem::WrongMachine(header.e_machine));
    }
    if header.e_type != abi::ET_EXEC {
        return Err(Problem::NotExec(header.e_type));
    }
    // PN_XNUM moves the real count into section header 0, which a static
    // image never needs; refuse it rather than trust a second table.
    if header.e_phnum == abi::PN_XNUM {
        return Err(Problem::TooManyProgramHeaders);
    }
    let headers = file.segments().ok_or(Problem::NoProgramHeaders)?;

    let mut segments = Vec::new();
    let mut abi_version = None;
    for (index, phdr) in headers.iter().enumerate() {
        match phdr.p_type {
            abi::PT_INTERP => return Err(Problem::Forbidden("PT_INTERP")),
            abi::PT_DYNAMIC => return Err(Problem::Forbidden("PT_DYNAMIC")),
            abi::PT_TLS => return Err(Problem::Forbidden("PT_TLS")),
            abi::PT_LOAD if phdr.p_memsz > 0 => {
                segments.push(check_load(index, &phdr, bytes.len() as u64, mem_size)?)
            }
            abi::PT_NOTE => {
                if let Some(version) = flint_note(&file, &phdr)? {
                    abi_version = Some(version);
                }
            }
            _ => {}
        }
    }

    segments.sort_by_key(|s| s.vaddr);
    for pair in segments.windows(2) {
        if pair[0].end().next_multiple_of(PAGE_SIZE) > pair[1].vaddr {
            return Err(Problem::SharedPage {
                first: pair[0].vaddr,
                second: pair[1].vaddr,
            });
        }
    }
    if segments.is_empty() {
        return Err(Problem::NoLoadSegment);
    }
    match abi_version {
        None => return Err(Problem::MissingNote),
        Some(ABI_VERSION) => {}
        Some(other) => return Err(Problem::WrongAbiVersion(other)),
    }
    let entry = header.e_entry;
    if !segments
        .iter()
        .any(|s| s.executable && (s.vaddr..s.end()).contains(&entry))
    {
        return Err(Problem::EntryNotExecutable(entry));
    }
    Ok(Checked { entry, segments })
}

fn check_load(
    index: usize,
    phdr: &elf::segment::ProgramHeader,
    file_len: u64,
    mem_size: u64,
) -> Result<Segment, Problem> {
    let (vaddr, memsz, filesz, offset) = (phdr.p_vaddr, phdr.p_memsz, phdr.p_filesz, phdr.p_offset);
    if vaddr != phdr.p_paddr {
        return Err(Problem::VaddrNotPaddr {
            index,
            vaddr,
            paddr: phdr.p_paddr,
        });
    }
    if vaddr % PAGE_SIZE != 0 {
        return Err(Problem::Unaligned { index, vaddr });
    }
    if offset % PAGE_SIZE != vaddr % PAGE_SIZE {
        return Err(Problem::OffsetMisaligned {
            index,
            offset,
            vaddr,
        });
    }
    if filesz > memsz {
        return Err(Problem::FileLargerThanMem {
            index,
            filesz,
            memsz,
        });
    }
    if offset.checked_add(filesz).is_none_or(|end| end > file_len) {
        return Err(Problem::PastEndOfFile {
            index,
            offset,
            filesz,
            file_len,
        });
    }
    if vaddr < IMAGE_BASE_MIN || vaddr.checked_add(memsz).is_none_or(|end| end > mem_size) {
        return Err(Problem::OutsideRam {
            index,
            vaddr,
            memsz,
            mem_size,
        });
    }
    let writable = phdr.p_flags & abi::PF_W != 0;
    let executable = phdr.p_flags & abi::PF_X != 0;
    if writable && executable {
        return Err(Problem::WriteAndExecute { index });
    }
    Ok(Segment {
        vaddr,
        mem_size: memsz,
        file_offset: offset,
        file_size: filesz,
        writable,
        executable,
    })
}

/// The ABI version in `phdr`'s FLINT note, if it holds one.
fn flint_note(
    file: &ElfBytes<AnyEndian>,
    phdr: &elf::segment::ProgramHeader,
) -> Result<Option<u32>, Problem> {
    let notes = file.segment_data_as_notes(phdr).map_err(parse_problem)?;
    for note in notes {
        let elf::note::Note::Unknown(any) = note else {
            continue;
        };
        let name = any.name.strip_suffix(&[0]).unwrap_or(any.name);
        if name != NOTE_NAME.as_bytes() || any.n_type != u64::from(NOTE_TYPE) {
            continue;
        }
        let desc: [u8; NOTE_DESC_SIZE] = any
            .desc
            .try_into()
            .map_err(|_| Problem::BadNote(any.desc.len()))?;
        return Ok(Some(u32::from_le_bytes(desc)));
    }
    Ok(None)
}

/// The elf crate's parse errors, as sentences about the file.
fn parse_problem(error: elf::ParseError) -> Problem {
    use elf::ParseError as E;
    Problem::Parse(match error {
        E::BadMagic(_) => "not an ELF file (bad magic number)".to_owned(),
        E::UnsupportedElfClass(class) => format!("unknown ELF class {class}"),
        E::UnsupportedElfEndianness(data) => format!("unknown ELF data encoding {data}"),
        E::UnsupportedVersion((found, _)) => format!("unknown ELF version {found}"),
        E::SliceReadError((start, end)) => format!(
            "truncated: a header, table or note at bytes [{start:#x}, {end:#x}) lies past the end of the file"
        ),
        E::IntegerOverflow => "a header offset or size overflows".to_owned(),
        E::BadEntsize((found, expected)) => {
            format!("table entry size is {found}, expected {expected}")
        }
        other => format!("malformed ELF ({other})"),
    })
}
