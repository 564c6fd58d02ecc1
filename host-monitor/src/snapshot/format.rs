//! The snapshot file: a header with a SHA-256 checksum, then guest RAM at
//! a page-aligned offset, byte for byte at its guest-physical address.
//! Pages that were zero (and everything below 1 MiB, which the monitor
//! rebuilds at restore) are holes: the file is sparse.
//!
//! ```text
//!   0  magic "FLINTSN\0"          8  format version (u32)   12  ABI_VERSION (u32)
//!  16  header length (u32)       20  net mode (u8) + 3 zero bytes
//!  24  data offset (u64)         32  mem_size   40  stack_size   48  generation
//!  56  instance clock (ns)       64  guest TSC  72  TSC Hz
//!  80  GPRs, RIP, RFLAGS (18 x u64)
//! 224  image SHA-256 (32)       256  lengths of image path, cmdline, monitor version (u32 x 3)
//! 268  image path, cmdline, monitor version (UTF-8)
//!   header length: SHA-256 of bytes [0, header length)
//! ```
//! All integers are little-endian.

use super::SnapshotError;
use hypercall_abi::{ABI_VERSION, CMDLINE_MAX, PAGE_SIZE};
use sha2::{Digest, Sha256};

/// The first 8 bytes of every snapshot.
pub const MAGIC: [u8; 8] = *b"FLINTSN\0";
/// This monitor's snapshot format.
pub const FORMAT_VERSION: u32 = 1;
/// The fixed part of the header.
const FIXED_LEN: usize = 268;
/// Checksum length.
const SUM_LEN: usize = 32;
/// The longest image path a snapshot may record.
pub const PATH_MAX: usize = 4096;
/// The longest monitor version string.
const VERSION_MAX: usize = 64;
/// The largest header (variable parts at their limits), page-rounded: RAM
/// starts here or earlier.
pub const DATA_OFFSET_MAX: u64 = 3 * PAGE_SIZE;

/// The guest's general-purpose registers, RIP and RFLAGS, in `kvm_regs`
/// order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Regs(pub [u64; 18]);

impl Regs {
    /// Index of RSP.
    pub const RSP: usize = 6;
    /// Index of RIP.
    pub const RIP: usize = 16;
    /// Index of RFLAGS.
    pub const RFLAGS: usize = 17;

    /// From KVM's register file.
    pub fn from_kvm(r: &kvm_bindings::kvm_regs) -> Regs {
        Regs([
            r.rax, r.rbx, r.rcx, r.rdx, r.rsi, r.rdi, r.rsp, r.rbp, r.r8, r.r9, r.r10, r.r11,
            r.r12, r.r13, r.r14, r.r15, r.rip, r.rflags,
        ])
    }

    /// KVM's register file; RFLAGS as given (the caller sanitises it).
    pub fn to_kvm(self) -> kvm_bindings::kvm_regs {
        let [rax, rbx, rcx, rdx, rsi, rdi, rsp, rbp, r8, r9, r10, r11, r12, r13, r14, r15, rip, rflags] =
            self.0;
        kvm_bindings::kvm_regs {
            rax,
            rbx,
            rcx,
            rdx,
            rsi,
            rdi,
            rsp,
            rbp,
            r8,
            r9,
            r10,
            r11,
            r12,
            r13,
            r14,
            r15,
            rip,
            rflags,
        }
    }
}

/// How the snapshotted instance was networked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NetKind {
    None = 0,
    User = 1,
    Tap = 2,
}

impl NetKind {
    fn from_byte(b: u8) -> Option<NetKind> {
        match b {
            0 => Some(NetKind::None),
            1 => Some(NetKind::User),
            2 => Some(NetKind::Tap),
            _ => None,
        }
    }

    /// True if the guest has a network device.
    pub fn present(self) -> bool {
        self != NetKind::None
    }
}

/// Everything a snapshot records besides guest RAM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub net: NetKind,
    pub mem_size: u64,
    pub stack_size: u64,
    /// `BootInfo.generation` of the snapshotted instance.
    pub generation: u64,
    /// The instance clock when the guest blocked.
    pub clock_ns: u64,
    /// The guest TSC then.
    pub guest_tsc: u64,
    pub tsc_hz: u64,
    pub regs: Regs,
    pub image_sha256: [u8; 32],
    pub image_path: String,
    pub cmdline: String,
    pub monitor_version: String,
}

impl Header {
    /// The encoded header with its checksum, padded with zeros to the data
    /// offset, which is the returned length.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(DATA_OFFSET_MAX as usize);
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        out.extend_from_slice(&ABI_VERSION.to_le_bytes());
        let header_len =
            FIXED_LEN + self.image_path.len() + self.cmdline.len() + self.monitor_version.len();
        out.extend_from_slice(&(header_len as u32).to_le_bytes());
        out.extend_from_slice(&[self.net as u8, 0, 0, 0]);
        let data_offset = Header::data_offset_for(header_len);
        for v in [
            data_offset,
            self.mem_size,
            self.stack_size,
            self.generation,
            self.clock_ns,
            self.guest_tsc,
            self.tsc_hz,
        ] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        for v in self.regs.0 {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&self.image_sha256);
        for s in [&self.image_path, &self.cmdline, &self.monitor_version] {
            out.extend_from_slice(&(s.len() as u32).to_le_bytes());
        }
        debug_assert_eq!(out.len(), FIXED_LEN);
        for s in [&self.image_path, &self.cmdline, &self.monitor_version] {
            out.extend_from_slice(s.as_bytes());
        }
        let sum = Sha256::digest(&out);
        out.extend_from_slice(&sum);
        out.resize(data_offset as usize, 0);
        out
    }

    fn data_offset_for(header_len: usize) -> u64 {
        ((header_len + SUM_LEN) as u64).next_multiple_of(PAGE_SIZE)
    }

    /// Decodes and checks the header at the start of a file of `file_len`
    /// bytes; returns it and where guest RAM starts.
    pub fn decode(bytes: &[u8], file_len: u64) -> Result<(Header, u64), SnapshotError> {
        let bad = SnapshotError::BadHeader;
        if bytes.len() < 24 {
            return Err(SnapshotError::Truncated);
        }
        if bytes[..8] != MAGIC {
            return Err(SnapshotError::NotASnapshot);
        }
        let mut r = Reader { bytes, at: 8 };
        let format = r.u32()?;
        if format != FORMAT_VERSION {
            return Err(SnapshotError::FormatVersion(format));
        }
        let abi = r.u32()?;
        if abi != ABI_VERSION {
            return Err(SnapshotError::AbiVersion(abi));
        }
        let header_len = r.u32()? as usize;
        let limit = FIXED_LEN + PATH_MAX + CMDLINE_MAX as usize + VERSION_MAX;
        if !(FIXED_LEN..=limit).contains(&header_len) {
            return Err(bad("the header length is out of range"));
        }
        if bytes.len() < header_len + SUM_LEN {
            return Err(SnapshotError::Truncated);
        }
        // The checksum first: nothing below is believed until it matches.
        let sum = Sha256::digest(&bytes[..header_len]);
        if sum[..] != bytes[header_len..header_len + SUM_LEN] {
            return Err(SnapshotError::Checksum);
        }
        let net_byte = r.take(4)?;
        let net = NetKind::from_byte(net_byte[0])
            .filter(|_| net_byte[1..] == [0, 0, 0])
            .ok_or(bad("the network mode is unknown"))?;
        let data_offset = r.u64()?;
        if data_offset != Header::data_offset_for(header_len) {
            return Err(bad("the memory offset does not follow the header"));
        }
        let mem_size = r.u64()?;
        let stack_size = r.u64()?;
        let generation = r.u64()?;
        let clock_ns = r.u64()?;
        let guest_tsc = r.u64()?;
        let tsc_hz = r.u64()?;
        let mut regs = Regs::default();
        for v in &mut regs.0 {
            *v = r.u64()?;
        }
        let image_sha256: [u8; 32] = r.take(32)?.try_into().unwrap_or_default();
        let path_len = r.u32()? as usize;
        let cmdline_len = r.u32()? as usize;
        let version_len = r.u32()? as usize;
        if path_len > PATH_MAX || cmdline_len > CMDLINE_MAX as usize || version_len > VERSION_MAX {
            return Err(bad("a recorded string is too long"));
        }
        if FIXED_LEN + path_len + cmdline_len + version_len != header_len {
            return Err(bad("the string lengths do not add up to the header length"));
        }
        let mut text = |len| {
            String::from_utf8(r.take(len)?.to_vec())
                .map_err(|_| bad("a recorded string is not UTF-8"))
        };
        let image_path = text(path_len)?;
        let cmdline = text(cmdline_len)?;
        let monitor_version = text(version_len)?;
        if mem_size == 0 || !mem_size.is_multiple_of(PAGE_SIZE) {
            return Err(bad(
                "the guest RAM size is not a positive multiple of 4 KiB",
            ));
        }
        let expected = data_offset.checked_add(mem_size);
        if expected != Some(file_len) {
            return Err(SnapshotError::WrongSize {
                len: file_len,
                expected: expected.unwrap_or(u64::MAX),
            });
        }
        let header = Header {
            net,
            mem_size,
            stack_size,
            generation,
            clock_ns,
            guest_tsc,
            tsc_hz,
            regs,
            image_sha256,
            image_path,
            cmdline,
            monitor_version,
        };
        Ok((header, data_offset))
    }
}

/// A cursor over header bytes; running off the end is a truncated file.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], SnapshotError> {
        let end = self.at.checked_add(n).ok_or(SnapshotError::Truncated)?;
        let slice = self
            .bytes
            .get(self.at..end)
            .ok_or(SnapshotError::Truncated)?;
        self.at = end;
        Ok(slice)
    }

    fn u32(&mut self) -> Result<u32, SnapshotError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<u64, SnapshotError> {
        let mut v = [0; 8];
        v.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> Header {
        let mut regs = Regs::default();
        for (i, v) in regs.0.iter_mut().enumerate() {
            *v = 0x1111 * i as u64;
        }
        Header {
            net: NetKind::User,
            mem_size: 16 << 20,
            stack_size: 256 << 10,
            generation: 3,
            clock_ns: 42_000_000,
            guest_tsc: 123_456_789,
            tsc_hz: 2_000_000_000,
            regs,
            image_sha256: [7; 32],
            image_path: "/images/http.elf".into(),
            cmdline: "--port 80".into(),
            monitor_version: "0.1.0".into(),
        }
    }

    fn file(h: &Header) -> (Vec<u8>, u64) {
        let bytes = h.encode();
        let len = bytes.len() as u64 + h.mem_size;
        (bytes, len)
    }

    #[test]
    fn a_header_round_trips() {
        let h = header();
        let (bytes, len) = file(&h);
        assert_eq!(bytes.len() as u64 % PAGE_SIZE, 0);
        let (back, offset) = Header::decode(&bytes, len).expect("decodes");
        assert_eq!(back, h);
        assert_eq!(offset, bytes.len() as u64);
    }

    #[test]
    fn a_truncated_header_is_refused() {
        let (bytes, len) = file(&header());
        for cut in [0, 7, 23, 100, FIXED_LEN, FIXED_LEN + 20] {
            let got = Header::decode(&bytes[..cut], len);
            assert!(
                matches!(got, Err(SnapshotError::Truncated)),
                "cut at {cut}: {got:?}"
            );
        }
    }

    #[test]
    fn every_edited_header_byte_is_caught() {
        let h = header();
        let (bytes, len) = file(&h);
        let header_len = FIXED_LEN + h.image_path.len() + h.cmdline.len() + h.monitor_version.len();
        for at in 0..header_len + SUM_LEN {
            let mut edited = bytes.clone();
            edited[at] ^= 0x40;
            let got = Header::decode(&edited, len);
            assert!(got.is_err(), "an edit at byte {at} was accepted");
        }
        // Past the magic, versions and length, the checksum catches it.
        let mut edited = bytes.clone();
        edited[100] ^= 1;
        assert!(matches!(
            Header::decode(&edited, len),
            Err(SnapshotError::Checksum)
        ));
    }

    #[test]
    fn a_file_of_the_wrong_size_is_refused() {
        let (bytes, len) = file(&header());
        for wrong in [len - 1, len + 1, len - PAGE_SIZE, bytes.len() as u64] {
            assert!(matches!(
                Header::decode(&bytes, wrong),
                Err(SnapshotError::WrongSize { .. })
            ));
        }
    }

    #[test]
    fn other_magic_format_and_abi_are_refused_by_name() {
        let (bytes, len) = file(&header());
        let mut other = bytes.clone();
        other[0] = b'X';
        assert!(matches!(
            Header::decode(&other, len),
            Err(SnapshotError::NotASnapshot)
        ));
        let mut other = bytes.clone();
        other[8..12].copy_from_slice(&2u32.to_le_bytes());
        assert!(matches!(
            Header::decode(&other, len),
            Err(SnapshotError::FormatVersion(2))
        ));
        let mut other = bytes.clone();
        other[12..16].copy_from_slice(&(ABI_VERSION + 1).to_le_bytes());
        assert!(matches!(
            Header::decode(&other, len),
            Err(SnapshotError::AbiVersion(_))
        ));
    }

    /// A header whose fields are wrong but whose checksum was recomputed
    /// (a hand-made hostile file) is still refused field by field.
    #[test]
    fn a_resealed_header_with_bad_fields_is_refused() {
        let h = header();
        let (bytes, len) = file(&h);
        let reseal = |mut b: Vec<u8>| {
            let header_len = u32::from_le_bytes(b[16..20].try_into().unwrap()) as usize;
            let sum = Sha256::digest(&b[..header_len]);
            b[header_len..header_len + SUM_LEN].copy_from_slice(&sum);
            b
        };
        let mut net = bytes.clone();
        net[20] = 9;
        assert!(matches!(
            Header::decode(&reseal(net), len),
            Err(SnapshotError::BadHeader(_))
        ));
        let mut offset = bytes.clone();
        offset[24..32].copy_from_slice(&(8 * PAGE_SIZE).to_le_bytes());
        assert!(matches!(
            Header::decode(&reseal(offset), len),
            Err(SnapshotError::BadHeader(_))
        ));
        let mut path_len = bytes.clone();
        path_len[256..260].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            Header::decode(&reseal(path_len), len),
            Err(SnapshotError::BadHeader(_))
        ));
        let mut mem = bytes.clone();
        mem[32..40].copy_from_slice(&(u64::MAX - 0xfff).to_le_bytes());
        assert!(matches!(
            Header::decode(&reseal(mem), len),
            Err(SnapshotError::WrongSize { .. })
        ));
    }
}
