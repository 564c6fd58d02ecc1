//! Arbitrary bytes as a Flint image: `Image::from_bytes` must refuse or
//! accept without panicking, and what it accepts must obey ABI.md section
//! 1 as the rest of the monitor relies on it (segments in the file, sorted,
//! not sharing a page, entry in an executable segment), and lay out.

#![no_main]

use host_monitor::image::Image;
use host_monitor::layout::Layout;
use libfuzzer_sys::fuzz_target;
use std::path::Path;

/// A 16 MiB guest, `flint run`'s default.
const MEM_SIZE: u64 = 16 << 20;

fuzz_target!(|data: &[u8]| {
    let Ok(image) = Image::from_bytes(Path::new("fuzz.elf"), data.to_vec(), MEM_SIZE) else {
        return;
    };
    let segments = image.segments();
    for pair in segments.windows(2) {
        assert!(
            pair[0].end().next_multiple_of(4096) <= pair[1].vaddr,
            "segments overlap or share a page: {pair:?}"
        );
    }
    for segment in segments {
        assert!(segment.file_size <= segment.mem_size, "{segment:?}");
        assert!(segment.end() <= MEM_SIZE, "{segment:?} past RAM");
        // Must not panic: validation checked the range against the file.
        let _ = image.segment_bytes(segment);
    }
    assert!(
        segments
            .iter()
            .any(|s| s.executable && (s.vaddr..s.end()).contains(&image.entry())),
        "entry {:#x} is not in an executable segment",
        image.entry()
    );
    let _ = Layout::new(&image, MEM_SIZE, 64 << 10, 16);
    let _ = image.symbolizer().describe(image.entry());
});
