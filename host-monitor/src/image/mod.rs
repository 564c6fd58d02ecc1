//! Flint images: an ELF file checked against ABI.md section 1, once, before
//! any guest memory exists.

mod symbols;
mod validate;

pub use symbols::Symbolizer;
pub use validate::ImageError;

use std::path::{Path, PathBuf};

/// A loadable segment of an image, already checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segment {
    /// Guest address of the first byte (page aligned; equals `p_paddr`).
    pub vaddr: u64,
    /// Bytes in memory; the tail past `file_size` is zero.
    pub mem_size: u64,
    /// Where the initialised bytes are in the file.
    pub file_offset: u64,
    /// How many initialised bytes there are.
    pub file_size: u64,
    /// The guest may write this segment.
    pub writable: bool,
    /// The guest may execute this segment.
    pub executable: bool,
}

impl Segment {
    /// One past the last byte in memory.
    pub fn end(&self) -> u64 {
        self.vaddr + self.mem_size
    }
}

/// A validated Flint image: its bytes, entry point and segments.
#[derive(Debug)]
pub struct Image {
    path: PathBuf,
    bytes: Vec<u8>,
    entry: u64,
    segments: Vec<Segment>,
}

impl Image {
    /// Reads and validates the image at `path` for a guest of `mem_size` bytes.
    pub fn load(path: &Path, mem_size: u64) -> Result<Image, ImageError> {
        let bytes = std::fs::read(path).map_err(|source| ImageError::Read {
            path: path.to_owned(),
            source,
        })?;
        Image::from_bytes(path, bytes, mem_size)
    }

    /// Validates `bytes` as an image for a guest of `mem_size` bytes; `path`
    /// only names it in messages.
    pub fn from_bytes(path: &Path, bytes: Vec<u8>, mem_size: u64) -> Result<Image, ImageError> {
        let checked =
            validate::validate(&bytes, mem_size).map_err(|problem| ImageError::Invalid {
                path: path.to_owned(),
                problem,
            })?;
        Ok(Image {
            path: path.to_owned(),
            bytes,
            entry: checked.entry,
            segments: checked.segments,
        })
    }

    /// The file the image came from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The image file's bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The entry point (inside an executable segment).
    pub fn entry(&self) -> u64 {
        self.entry
    }

    /// The loadable segments, sorted by address, none sharing a page.
    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// The initialised bytes of `segment`.
    pub fn segment_bytes(&self, segment: &Segment) -> &[u8] {
        // In range: validation checked offset + size against the file length.
        let start = segment.file_offset as usize;
        &self.bytes[start..start + segment.file_size as usize]
    }

    /// One past the highest byte any segment occupies.
    pub fn end(&self) -> u64 {
        self.segments.iter().map(Segment::end).max().unwrap_or(0)
    }

    /// Names the function containing `addr` from the image's symbol table.
    pub fn symbolizer(&self) -> Symbolizer<'_> {
        Symbolizer::new(&self.bytes)
    }
}
