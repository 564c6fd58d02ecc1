//! The fast way to make guest RAM its template's contents again: copy the
//! template back over only the pages this mapping has its own copy of,
//! found in `/proc/self/pagemap`. The pages stay mapped, in the host and in
//! KVM, so the guest's next run takes no page faults on them; laying a new
//! mapping over the RAM (the slow way) drops them all, and on the nested
//! hosts of DESIGN.md each first touch of a page costs 5-14 µs.

use super::{GuestRam, MemoryError, MemoryTemplate};
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, OnceLock};
use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};

const PAGE: u64 = 4096;
/// pagemap entry bits (Documentation/admin-guide/mm/pagemap.rst).
const PRESENT: u64 = 1 << 63;
const SWAPPED: u64 = 1 << 62;
const FILE_OR_SHARED: u64 = 1 << 61;
/// Above this much RAM, reading the pagemap (8 bytes per page) costs more
/// than re-faulting what a guest typically touches: lay a new mapping over
/// it instead.
const MAX_SCANNED: u64 = 256 << 20;
/// pagemap entries read per system call.
const CHUNK: usize = 4096;

/// `/proc/self/pagemap`, opened once per process; `None` if unreadable.
fn pagemap() -> Option<&'static File> {
    static PAGEMAP: OnceLock<Option<File>> = OnceLock::new();
    PAGEMAP
        .get_or_init(|| File::open("/proc/self/pagemap").ok())
        .as_ref()
}

/// The fd of `/proc/self/pagemap`, opened now if it was not yet (so that
/// a seccomp-filtered thread that resets instances finds it open, and may
/// read only it); `None` if unreadable.
pub(crate) fn pagemap_fd() -> Option<std::os::fd::RawFd> {
    pagemap().map(AsRawFd::as_raw_fd)
}

/// `PAGEMAP_SCAN`'s request number, for the seccomp filter of a thread
/// that resets instances.
pub(crate) const PAGEMAP_SCAN_REQUEST: u64 = PAGEMAP_SCAN;

impl GuestRam {
    /// True if this RAM is a private mapping of `template`'s file at its
    /// offset (so every page it has not written still reads as the
    /// template's).
    pub(super) fn maps(&self, template: &MemoryTemplate) -> bool {
        self.memory.iter().next().is_some_and(|region| {
            region.file_offset().is_some_and(|f| {
                Arc::ptr_eq(f.arc(), &template.file) && f.start() == template.offset
            })
        })
    }

    /// Copies `template` back over every page of this RAM that is private
    /// (written by the guest or the monitor since it was mapped): the RAM
    /// then reads exactly as the template. Only for RAM that
    /// [`GuestRam::maps`] `template`. `Ok(false)`, changing nothing, when
    /// the pagemap cannot be read or the RAM is too large to scan.
    pub(super) fn restore_written_pages(
        &self,
        template: &MemoryTemplate,
    ) -> Result<bool, MemoryError> {
        let size = self.layout.mem_size;
        let Some(pagemap) = pagemap() else {
            return Ok(false);
        };
        let base = self.host_base();
        if base == 0 || !base.is_multiple_of(PAGE) {
            return Ok(false);
        }
        let runs = match scan_private(pagemap, base, size) {
            Some(runs) => runs,
            None if size > MAX_SCANNED => return Ok(false),
            None => match read_private(pagemap, base, size) {
                Some(runs) => runs,
                None => return Ok(false),
            },
        };
        for run in runs {
            self.copy_back(template, run)?;
        }
        Ok(true)
    }

    /// Reads pages `[start, end)` of `template` into the same pages of RAM.
    fn copy_back(
        &self,
        template: &MemoryTemplate,
        (start, end): (usize, usize),
    ) -> Result<(), MemoryError> {
        let offset = start as u64 * PAGE;
        let len = (end - start) as u64 * PAGE;
        let mut done = 0;
        while done < len {
            let host = self.host_base() + offset + done;
            // SAFETY: `[offset, offset + len)` lies within this RAM's single
            // mapping of `mem_size` bytes at `host_base()` (pages counted
            // from the pagemap of exactly that range), the instance is not
            // running (the caller holds `&mut` on the RAM's owner), and the
            // kernel writes at most `len - done` bytes there.
            let read = unsafe {
                libc::pread(
                    template.file.as_raw_fd(),
                    host as *mut libc::c_void,
                    (len - done) as usize,
                    (template.offset + offset + done) as libc::off_t,
                )
            };
            match read {
                n if n > 0 => done += n as u64,
                // Past the end of a file that should cover all of RAM
                // (a truncated snapshot): the rest is zero.
                0 => {
                    // SAFETY: as above; zeroing the rest of the same range.
                    unsafe {
                        std::ptr::write_bytes(host as *mut u8, 0, (len - done) as usize);
                    }
                    done = len;
                }
                _ => {
                    let e = std::io::Error::last_os_error();
                    if e.kind() != std::io::ErrorKind::Interrupted {
                        return Err(MemoryError::Template(e));
                    }
                }
            }
        }
        Ok(())
    }
}

/// `struct pm_scan_arg` of `<linux/fs.h>` (Linux 6.7+).
#[repr(C)]
#[derive(Default)]
struct PmScanArg {
    size: u64,
    flags: u64,
    start: u64,
    end: u64,
    walk_end: u64,
    vec: u64,
    vec_len: u64,
    max_pages: u64,
    category_inverted: u64,
    category_mask: u64,
    category_anyof_mask: u64,
    return_mask: u64,
}

/// `struct page_region` of `<linux/fs.h>`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct PageRegion {
    start: u64,
    end: u64,
    categories: u64,
}

/// `PAGEMAP_SCAN`: `_IOWR('f', 16, struct pm_scan_arg)`.
const PAGEMAP_SCAN: u64 = 0xc000_0000 | (96 << 16) | ((b'f' as u64) << 8) | 16;
const PAGE_IS_FILE: u64 = 1 << 2;
const PAGE_IS_PRESENT: u64 = 1 << 3;
const PAGE_IS_SWAPPED: u64 = 1 << 4;
/// Regions returned per `PAGEMAP_SCAN` call.
const REGIONS: usize = 64;

/// The runs of private pages (present or swapped, not the file's) in
/// `[base, base + size)`, as page-index ranges from `base`, asked of the
/// kernel with one `PAGEMAP_SCAN` per [`REGIONS`] runs: it skips unmapped
/// page tables instead of reporting 8 bytes per page. `None` if the kernel
/// has no `PAGEMAP_SCAN` (before 6.7) or refuses it.
fn scan_private(pagemap: &File, base: u64, size: u64) -> Option<Vec<(usize, usize)>> {
    const _: () = assert!(size_of::<PmScanArg>() == 96);
    let end = base.checked_add(size)?;
    let mut regions = [PageRegion::default(); REGIONS];
    let mut runs = Vec::new();
    let mut start = base;
    while start < end {
        let mut arg = PmScanArg {
            size: size_of::<PmScanArg>() as u64,
            start,
            end,
            vec: regions.as_mut_ptr() as u64,
            vec_len: REGIONS as u64,
            // Not the file's page, and present or swapped.
            category_inverted: PAGE_IS_FILE,
            category_mask: PAGE_IS_FILE,
            category_anyof_mask: PAGE_IS_PRESENT | PAGE_IS_SWAPPED,
            return_mask: PAGE_IS_PRESENT | PAGE_IS_SWAPPED,
            ..PmScanArg::default()
        };
        // SAFETY: PAGEMAP_SCAN reads `arg` and writes at most `vec_len`
        // `page_region`s to `vec`, which points at `regions`, and
        // `arg.walk_end`; both live until the call returns. It only reads
        // this process's page tables.
        let filled = unsafe {
            libc::ioctl(
                pagemap.as_raw_fd(),
                PAGEMAP_SCAN as libc::Ioctl,
                &mut arg as *mut PmScanArg,
            )
        };
        let filled = usize::try_from(filled).ok()?.min(REGIONS);
        for region in &regions[..filled] {
            let first = region.start.checked_sub(base)? / PAGE;
            let last = region.end.checked_sub(base)?.div_ceil(PAGE);
            runs.push((first as usize, last as usize));
        }
        if arg.walk_end <= start {
            return None;
        }
        start = arg.walk_end;
    }
    Some(runs)
}

/// [`scan_private`] for kernels before 6.7: reads the pagemap entry (8
/// bytes) of every page.
fn read_private(pagemap: &File, base: u64, size: u64) -> Option<Vec<(usize, usize)>> {
    let pages = (size / PAGE) as usize;
    let mut entries = vec![0u64; CHUNK.min(pages)];
    let mut runs: Vec<(usize, usize)> = Vec::new();
    let mut first = 0;
    while first < pages {
        let count = CHUNK.min(pages - first);
        let bytes = zerocopy::IntoBytes::as_mut_bytes(&mut entries[..count]);
        let at = (base / PAGE + first as u64) * 8;
        pagemap.read_exact_at(bytes, at).ok()?;
        for (i, &entry) in entries[..count].iter().enumerate() {
            let page = first + i;
            let private =
                (entry & PRESENT != 0 && entry & FILE_OR_SHARED == 0) || entry & SWAPPED != 0;
            if !private {
                continue;
            }
            match runs.last_mut() {
                Some((_, end)) if *end == page => *end = page + 1,
                _ => runs.push((page, page + 1)),
            }
        }
        first += count;
    }
    Some(runs)
}

#[cfg(test)]
mod tests {
    use super::super::tests::layout;
    use super::*;

    fn make_template() -> MemoryTemplate {
        MemoryTemplate::build(
            layout(),
            &[
                (0x20_0000, &[0xaa; 8192], "an image segment"),
                (0x3000, b"gdt", "the GDT"),
            ],
        )
        .expect("template")
    }

    /// Writes to: a template page (start and middle of a two-page run), a
    /// page that was a hole, and one far up; reads another.
    fn scribble(ram: &GuestRam) {
        for gpa in [0x20_0000, 0x20_1800, 0x1000, 0x30_0000, 0x3f_f000] {
            ram.setup_write(gpa, b"scribbled", "test").expect("write");
        }
        assert!(ram.peek(0x10_0000, 8).is_some());
    }

    fn assert_reads_as_template(ram: &GuestRam) {
        assert_eq!(ram.peek(0x20_0000, 8192), Some(vec![0xaa; 8192]));
        assert_eq!(ram.peek(0x3000, 3).as_deref(), Some(&b"gdt"[..]));
        for gpa in [0x1000, 0x30_0000, 0x3f_f000, 0x10_0000] {
            assert_eq!(ram.peek(gpa, 9), Some(vec![0; 9]), "at {gpa:#x}");
        }
    }

    #[test]
    fn reset_copies_the_template_back_over_written_pages_only() {
        let template = make_template();
        let mut ram = GuestRam::from_template(&template).expect("map");
        assert!(ram.maps(&template));
        scribble(&ram);
        ram.reset_from(&template).expect("reset");
        assert_reads_as_template(&ram);
        // Again, now that the pages were copied back once.
        scribble(&ram);
        ram.reset_from(&template).expect("reset again");
        assert_reads_as_template(&ram);
    }

    #[test]
    fn reset_of_ram_from_elsewhere_maps_the_template_over_it() {
        let template = make_template();
        let mut ram = GuestRam::new(layout()).expect("anonymous RAM");
        assert!(!ram.maps(&template));
        scribble(&ram);
        ram.reset_from(&template).expect("reset");
        assert_reads_as_template(&ram);
        let other = make_template();
        assert!(!ram.maps(&other), "RAM of one template is not another's");
    }

    #[test]
    fn both_pagemap_readers_find_the_same_written_pages() {
        let template = make_template();
        let ram = GuestRam::from_template(&template).expect("map");
        scribble(&ram);
        let pagemap = pagemap().expect("/proc/self/pagemap");
        let (base, size) = (ram.host_base(), ram.layout().mem_size);
        let read = read_private(pagemap, base, size).expect("read pagemap");
        let want = vec![(0x1, 0x2), (0x200, 0x202), (0x300, 0x301), (0x3ff, 0x400)];
        assert_eq!(read, want, "pages written, from the pagemap entries");
        match scan_private(pagemap, base, size) {
            Some(scanned) => assert_eq!(scanned, want, "pages written, from PAGEMAP_SCAN"),
            None => eprintln!("PAGEMAP_SCAN unsupported here (Linux < 6.7): not checked"),
        }
    }

    #[test]
    fn a_template_of_another_size_is_refused() {
        let template = make_template();
        let mut small = layout();
        small.mem_size = 2 << 20;
        let mut ram = GuestRam::new(small).expect("RAM");
        assert!(matches!(
            ram.reset_from(&template),
            Err(MemoryError::Reserve { .. })
        ));
    }
}
