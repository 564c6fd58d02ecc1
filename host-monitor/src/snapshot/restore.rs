//! Restoring a snapshot: validate the file and its image, map its RAM
//! copy-on-write, and put back only what the guest itself owns.

use super::format::{Header, Regs, DATA_OFFSET_MAX};
use super::{image_sha256, SnapshotError};
use crate::guest_memory::{GuestRam, MemoryTemplate};
use crate::hypercall::InstanceClock;
use crate::image::Image;
use crate::instance::{Config, StartError};
use crate::layout::{low, Layout, RegionKind};
use crate::net::spec::NetSetup;
use crate::paging::PageTables;
use crate::vcpu::{self, KvmError};
use hypercall_abi::BootInfo;
use kvm_bindings::{kvm_msr_entry, Msrs};
use kvm_ioctls::VcpuFd;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use zerocopy::{FromBytes, IntoBytes};

/// RFLAGS bits a restored guest keeps: the arithmetic flags and DF. No
/// IF, IOPL, TF, NT, RF, VM, AC or ID: the guest starts with only bit 1.
const RFLAGS_KEPT: u64 = 0x1 | 0x4 | 0x10 | 0x40 | 0x80 | 0x400 | 0x800;
/// RFLAGS bit 1, always set.
const RFLAGS_FIXED: u64 = 0x2;
const MSR_IA32_TSC: u32 = 0x10;

/// A validated snapshot, its RAM ready to map into any number of
/// instances.
pub struct Snapshot {
    header: Header,
    template: MemoryTemplate,
    /// The guest-physical ranges the file holds data for (the rest are
    /// holes, zero).
    data: Vec<(u64, u64)>,
}

/// What a restored instance continues from.
#[derive(Clone, Copy, Debug)]
pub struct Resumed {
    /// `BootInfo.generation` for the restored instance.
    pub generation: u64,
    /// The instance clock when the snapshot was taken: the restored
    /// instance's clock continues from it.
    pub clock_ns: u64,
}

impl Snapshot {
    /// Opens and validates the snapshot at `path` and the image it was
    /// taken from (`image`, or the path the snapshot recorded).
    pub fn open(path: &Path, image: Option<&Path>) -> Result<(Snapshot, Image), SnapshotError> {
        let file = File::open(path).map_err(SnapshotError::Read)?;
        let len = file.metadata().map_err(SnapshotError::Read)?.len();
        let mut head = vec![0; len.min(DATA_OFFSET_MAX) as usize];
        file.read_exact_at(&mut head, 0)
            .map_err(SnapshotError::Read)?;
        let (header, data_offset) = Header::decode(&head, len)?;
        if header.generation == u64::MAX {
            return Err(SnapshotError::BadHeader("the generation cannot be bumped"));
        }

        let image_path = image.map_or_else(|| PathBuf::from(&header.image_path), Path::to_owned);
        let bytes =
            std::fs::read(&image_path).map_err(|source| crate::image::ImageError::Read {
                path: image_path.clone(),
                source,
            })?;
        if image_sha256(&bytes) != header.image_sha256 {
            return Err(SnapshotError::ImageMismatch { path: image_path });
        }
        let image = Image::from_bytes(&image_path, bytes, header.mem_size)?;
        let layout = Layout::new(
            &image,
            header.mem_size,
            header.stack_size,
            header.cmdline.len(),
        )?;
        check_registers(&header.regs, &layout)?;
        let data = data_ranges(&file, data_offset, len);
        let template = MemoryTemplate::from_file(file, data_offset, layout);
        Ok((
            Snapshot {
                header,
                template,
                data,
            },
            image,
        ))
    }

    /// [`Snapshot::open`], and makes `config` the snapshot's (sizes,
    /// command line), keeping its network and timeout, which must agree
    /// with the snapshot on having a network device or not.
    pub fn open_for(
        path: &Path,
        image: Option<&Path>,
        config: &mut Config,
    ) -> Result<(Snapshot, Image), SnapshotError> {
        let (snapshot, image) = Snapshot::open(path, image)?;
        let header = &snapshot.header;
        let networked = config.net != NetSetup::None;
        if header.net.present() != networked {
            return Err(SnapshotError::NetMismatch {
                snapshot: header.net.present(),
            });
        }
        config.mem_size = header.mem_size;
        config.stack_size = header.stack_size;
        config.cmdline = header.cmdline.clone();
        Ok((snapshot, image))
    }

    /// What the snapshot recorded.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The snapshot's RAM, for [`crate::instance::Launch::template`].
    pub fn template(&self) -> &MemoryTemplate {
        &self.template
    }

    /// Puts the monitor's own structures back over the restored RAM (page
    /// tables, GDT, command line; `BootInfo` is the caller's) and the
    /// guest's registers and TSC into `vcpu`, which was set up as for a
    /// first boot (control registers, segments, MSRs from the monitor).
    pub fn resume(
        &self,
        vcpu: &mut VcpuFd,
        ram: &GuestRam,
        gdt: &[u8],
        sync_regs: bool,
    ) -> Result<Resumed, StartError> {
        prefault(ram, &self.data);
        let tables = PageTables::build(ram.layout())?;
        ram.setup_write(tables.root(), &tables.bytes(), "page tables")?;
        ram.setup_write(low::GDT, gdt, "the GDT")?;
        if !self.header.cmdline.is_empty() {
            let at = ram.layout().cmdline;
            ram.setup_write(at, self.header.cmdline.as_bytes(), "the command line")?;
        }
        let mut regs = self.header.regs;
        regs.0[Regs::RFLAGS] = regs.0[Regs::RFLAGS] & RFLAGS_KEPT | RFLAGS_FIXED;
        if sync_regs {
            vcpu::load_on_entry(vcpu, regs.to_kvm(), None);
        } else {
            vcpu.set_regs(&regs.to_kvm())
                .map_err(ioctl("set the restored registers"))?;
        }
        // The guest TSC carries on from the snapshot, so the instance clock
        // (TSC - tsc_at_boot) never runs backward.
        let tsc = Msrs::from_entries(&[kvm_msr_entry {
            index: MSR_IA32_TSC,
            data: self.header.guest_tsc,
            ..Default::default()
        }])
        .map_err(|_| KvmError::Ioctl {
            what: "build the MSR list",
            source: kvm_ioctls::Error::new(libc::EINVAL),
        })?;
        vcpu.set_msrs(&tsc).map_err(ioctl("set the guest TSC"))?;
        Ok(Resumed {
            generation: self.header.generation + 1,
            clock_ns: self.header.clock_ns,
        })
    }
}

impl Resumed {
    /// Turns the first-boot `BootInfo` in `ram` (just written, with the
    /// clock base `clock` read from the restored TSC) into a restored
    /// instance's: `generation` bumped, and the instance clock carrying on
    /// from the snapshot's instead of starting at zero.
    pub fn continue_boot_info(
        self,
        ram: &GuestRam,
        tsc_hz: u64,
        clock: InstanceClock,
    ) -> Result<InstanceClock, StartError> {
        let size = size_of::<BootInfo>();
        let bytes = ram.peek(low::BOOT_INFO, size).unwrap_or_default();
        let mut boot = BootInfo::read_from_bytes(&bytes).unwrap_or_default();
        let ticks = u128::from(self.clock_ns) * u128::from(tsc_hz) / 1_000_000_000;
        boot.tsc_at_boot = boot.tsc_at_boot.saturating_sub(ticks as u64);
        boot.wall_ns_at_boot = boot.wall_ns_at_boot.saturating_sub(self.clock_ns);
        boot.generation = self.generation;
        ram.setup_write(low::BOOT_INFO, boot.as_bytes(), "BootInfo")?;
        Ok(clock.back_dated(self.clock_ns))
    }
}

/// The `(gpa, len)` ranges of the file after `offset` that hold data, as
/// the file system reports them; none if it cannot say.
fn data_ranges(file: &File, offset: u64, len: u64) -> Vec<(u64, u64)> {
    let fd = file.as_raw_fd();
    let mut ranges = Vec::new();
    let mut at = offset as libc::off_t;
    while (at as u64) < len {
        // SAFETY: lseek on a descriptor we own; results are checked.
        let data = unsafe { libc::lseek(fd, at, libc::SEEK_DATA) };
        if data < 0 {
            break;
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(fd, data, libc::SEEK_HOLE) };
        if hole <= data {
            break;
        }
        ranges.push((data as u64 - offset, (hole - data) as u64));
        at = hole;
    }
    ranges
}

/// Makes the guest's own copies of the pages the snapshot holds data for
/// now, in a few calls, rather than one EPT fault and copy-on-write fault
/// per page as the guest touches them. Best effort (Linux 5.14+).
fn prefault(ram: &GuestRam, data: &[(u64, u64)]) {
    let base = ram.host_base();
    let size = ram.layout().mem_size;
    for &(gpa, len) in data {
        let len = len.min(size.saturating_sub(gpa));
        if len == 0 || base == 0 {
            continue;
        }
        // SAFETY: the range lies inside guest RAM's own mapping; populating
        // changes no contents.
        unsafe {
            libc::madvise(
                (base + gpa) as *mut libc::c_void,
                len as usize,
                libc::MADV_POPULATE_WRITE,
            );
        }
    }
}

fn ioctl(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> KvmError {
    move |source| KvmError::Ioctl { what, source }
}

/// RIP must be in an executable image segment and RSP in the stack.
fn check_registers(regs: &Regs, layout: &Layout) -> Result<(), SnapshotError> {
    let rip = regs.0[Regs::RIP];
    let executable = layout
        .region_at(rip)
        .is_some_and(|r| r.perm.exec && r.kind == RegionKind::Image);
    if !executable {
        return Err(SnapshotError::BadRegisters(
            "RIP is not in an executable segment of the image",
        ));
    }
    let rsp = regs.0[Regs::RSP];
    if !(layout.stack_top - layout.stack_size..=layout.stack_top).contains(&rsp) {
        return Err(SnapshotError::BadRegisters("RSP is not in the stack"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::{Perm, Region};

    fn layout() -> Layout {
        Layout {
            mem_size: 4 << 20,
            heap_start: 0x20_2000,
            heap_end: (4 << 20) - 0x5000,
            stack_top: 4 << 20,
            stack_size: 0x4000,
            cmdline: 0,
            regions: vec![
                Region {
                    start: 0x20_0000,
                    end: 0x20_1000,
                    perm: Perm {
                        write: false,
                        exec: true,
                    },
                    kind: RegionKind::Image,
                },
                Region {
                    start: 0x20_1000,
                    end: 0x20_2000,
                    perm: Perm::RW,
                    kind: RegionKind::Image,
                },
            ],
        }
    }

    fn regs(rip: u64, rsp: u64) -> Regs {
        let mut r = Regs::default();
        r.0[Regs::RIP] = rip;
        r.0[Regs::RSP] = rsp;
        r
    }

    #[test]
    fn rip_in_code_and_rsp_in_the_stack_are_accepted() {
        assert!(check_registers(&regs(0x20_0010, (4 << 20) - 0x100), &layout()).is_ok());
    }

    #[test]
    fn rip_outside_code_is_refused() {
        for rip in [0, 0x1000, 0x4000, 0x20_1000, 0x30_0000, u64::MAX] {
            assert!(
                matches!(
                    check_registers(&regs(rip, (4 << 20) - 0x100), &layout()),
                    Err(SnapshotError::BadRegisters(_))
                ),
                "RIP {rip:#x} was accepted"
            );
        }
    }

    #[test]
    fn rsp_outside_the_stack_is_refused() {
        for rsp in [0, 0x20_1800, (4 << 20) - 0x5000, (4 << 20) + 8] {
            assert!(
                matches!(
                    check_registers(&regs(0x20_0010, rsp), &layout()),
                    Err(SnapshotError::BadRegisters(_))
                ),
                "RSP {rsp:#x} was accepted"
            );
        }
    }

    #[test]
    fn rflags_keep_only_arithmetic_flags() {
        let hostile = u64::MAX;
        let kept = hostile & RFLAGS_KEPT | RFLAGS_FIXED;
        assert_eq!(kept & (1 << 8), 0, "TF");
        assert_eq!(kept & (1 << 9), 0, "IF");
        assert_eq!(kept & (3 << 12), 0, "IOPL");
        assert_eq!(kept & (1 << 17), 0, "VM");
    }
}
