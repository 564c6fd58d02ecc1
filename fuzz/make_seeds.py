#!/usr/bin/env python3
"""Writes the seed corpora in fuzz/corpus/ (committed; rerun after an
input format of a target changes). elf_loader's seed is a built image:
run `cargo xtask build hello` first. Usage: python3 fuzz/make_seeds.py"""

import hashlib
import os
import shutil
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "corpus")


def put(target, name, data):
    folder = os.path.join(CORPUS, target)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, name), "wb") as f:
        f.write(data)


def q(*values):
    return struct.pack("<%dQ" % len(values), *values)


# --- network frames (guest 52:54:00:12:34:56 10.0.2.15, gateway 10.0.2.2) --
GUEST_MAC = bytes([0x52, 0x54, 0, 0x12, 0x34, 0x56])
GW_MAC = bytes([0x52, 0x55, 10, 0, 2, 2])
GUEST_IP = bytes([10, 0, 2, 15])
GW_IP = bytes([10, 0, 2, 2])


def csum(data):
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return (~total) & 0xFFFF


def ipv4(proto, body):
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(body), 1, 0x4000, 64, proto, 0, GUEST_IP, GW_IP)
    header = header[:10] + struct.pack("!H", csum(header)) + header[12:]
    return b"\x08\x00", header + body


def pseudo(proto, body):
    return GUEST_IP + GW_IP + struct.pack("!BBH", 0, proto, len(body)) + body


def eth(dst, ethertype, payload):
    return dst + GUEST_MAC + ethertype + payload


def arp_request():
    body = struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1) + GUEST_MAC + GUEST_IP + bytes(6) + GW_IP
    return eth(b"\xff" * 6, b"\x08\x06", body)


def icmp_echo():
    body = struct.pack("!BBHHH", 8, 0, 0, 0x1234, 1) + b"flint-ping"
    body = body[:2] + struct.pack("!H", csum(body)) + body[4:]
    return eth(GW_MAC, *ipv4(1, body))


def tcp(port, flags, seq=1000, ack=0, payload=b""):
    body = struct.pack("!HHIIBBHHH", 40000, port, seq, ack, 5 << 4, flags, 64240, 0, 0) + payload
    body = body[:16] + struct.pack("!H", csum(pseudo(6, body))) + body[18:]
    return eth(GW_MAC, *ipv4(6, body))


def udp(port, payload):
    body = struct.pack("!HHHH", 40000, port, 8 + len(payload), 0) + payload
    body = body[:6] + struct.pack("!H", csum(pseudo(17, body))) + body[8:]
    return eth(GW_MAC, *ipv4(17, body))


def frames(flags, *fs):
    return bytes([flags]) + b"".join(struct.pack("<H", len(f)) + f for f in fs)


put("net_frames", "arp", frames(0, arp_request()))
put("net_frames", "arp_then_ping", frames(0, arp_request(), icmp_echo()))
put("net_frames", "tcp_syn", frames(1, arp_request(), tcp(80, 0x02)))
put("net_frames", "tcp_syn_data_fin", frames(1, tcp(80, 0x02), tcp(80, 0x18, 1001, 1, b"GET / HTTP/1.0\r\n\r\n"), tcp(80, 0x11, 1019, 1)))
put("net_frames", "udp", frames(1, udp(53, b"\x12\x34\x01\x00")))



# Flags bit 1: forwarded connections (fuzz_targets/forward_rig.rs). Ops:
# 0 connect, 1 write 17*n, 2 shutdown, 3 reset, 4 read (high 5 bits pick the
# client), 5 guest segment (flags, seq/ack offsets, window, length, payload),
# 6 raw frame (u16 length, bytes), 7 run the host side again.
def seg(flags, payload=b"", seq_off=0, ack_off=0, window=0xFFFF, flow=0):
    return bytes([5 | flow << 3, flags, seq_off & 0xFF, ack_off & 0xFF]) + struct.pack("<H", window) + bytes([len(payload)]) + payload


SYN_ACK, ACK, FIN_ACK, RST, PSH_ACK = 0x12, 0x10, 0x11, 0x04, 0x18
put("net_frames", "forward_echo", bytes([3, 0, 7]) + seg(SYN_ACK) + bytes([1, 1]) + seg(PSH_ACK, b"hello") + bytes([4, 2]) + seg(FIN_ACK) + bytes([7, 4, 3]))
put("net_frames", "forward_guest_reset", bytes([3, 0, 7]) + seg(SYN_ACK) + bytes([1, 3]) + seg(RST) + bytes([7, 4]))
put("net_frames", "forward_refused", bytes([3, 0, 7]) + seg(RST | ACK) + bytes([7, 0, 7]) + seg(SYN_ACK, flow=1) + bytes([3, 7]))
put("net_frames", "forward_zero_window", bytes([3, 0, 7]) + seg(SYN_ACK, window=0) + bytes([1, 200, 7]) + seg(ACK, window=100, ack_off=50) + bytes([2, 7]) + seg(ACK, b"x" * 40, seq_off=-3) + bytes([4, 3]))

# --- hypercall dispatch: flags, count-1, then (nr u8, block u64) per call,
# then guest RAM from the heap (0x4000) on ------------------------------
HEAP = 0x4000


def calls(flags, pairs, ram):
    head = bytes([flags, len(pairs) - 1])
    for nr, block in pairs:
        head += bytes([nr]) + q(block)
    return head + ram


def at(layout):
    """RAM bytes from the heap start: {offset: bytes}."""
    end = max(off + len(b) for off, b in layout.items())
    ram = bytearray(end)
    for off, b in layout.items():
        ram[off:off + len(b)] = b
    return bytes(ram)


put("hypercall_dispatch", "console_write", calls(0, [(1, HEAP)], at({0: q(HEAP + 0x100, 5, 0), 0x100: b"hello"})))
put("hypercall_dispatch", "console_write_efault", calls(0, [(1, HEAP)], at({0: q(0x8000, 16, 0)})))
put("hypercall_dispatch", "exit", calls(0, [(2, HEAP)], at({0: q(3)})))
put("hypercall_dispatch", "panic", calls(0, [(3, HEAP)], at({0: q(HEAP + 0x100, 4), 0x100: b"oops"})))
put("hypercall_dispatch", "clock", calls(0, [(4, HEAP)], at({0: q(0, 0)})))
put("hypercall_dispatch", "poll", calls(0, [(5, HEAP)], at({0: q(0, 0, 0)})))
put("hypercall_dispatch", "random", calls(0, [(8, HEAP)], at({0: q(HEAP + 0x100, 16, 0)})))
put("hypercall_dispatch", "unknown", calls(0, [(9, HEAP)], at({0: q(0)})))
put("hypercall_dispatch", "unaligned_block", calls(0, [(4, HEAP + 4)], at({0: q(0, 0)})))
put("hypercall_dispatch", "block_in_image", calls(0, [(4, 0x2000)], b""))
arp = arp_request()
put(
    "hypercall_dispatch",
    "net_write_read_poll",
    calls(
        1,
        [(6, HEAP), (7, HEAP + 0x20), (5, HEAP + 0x40), (7, HEAP + 0x20)],
        at({0: q(HEAP + 0x100, len(arp), 0), 0x20: q(HEAP + 0x800, 1514, 0, 0), 0x40: q(0, 0, 0), 0x100: arp}),
    ),
)
put("hypercall_dispatch", "net_absent", calls(0, [(6, HEAP)], at({0: q(HEAP + 0x100, len(arp), 0), 0x100: arp})))
# Flags bit 1: POLL sleeps (a 100 us deadline, then "never" until the
# 200 us wall-time limit), without and with a network device.
put("hypercall_dispatch", "poll_sleeps", calls(2, [(5, HEAP), (5, HEAP + 0x20)], at({0: q(100_000, 7, 7), 0x20: q(2**64 - 1, 7, 7)})))
put("hypercall_dispatch", "poll_sleeps_net", calls(3, [(6, HEAP), (5, HEAP + 0x40), (5, HEAP + 0x60), (7, HEAP + 0x20)], at({0: q(HEAP + 0x100, len(arp), 0), 0x20: q(HEAP + 0x800, 1514, 0, 0), 0x40: q(50_000, 7, 7), 0x60: q(2**63, 7, 7), 0x100: arp})))

# --- snapshot header: flags, file length (u64), header ------------------


def snapshot_header(net=1, mem_size=16 << 20, path=b"target/flint/echo.elf", cmdline=b"", version=b"0.1.0"):
    fixed = 268
    header_len = fixed + len(path) + len(cmdline) + len(version)
    data_offset = (header_len + 32 + 4095) // 4096 * 4096
    out = b"FLINTSN\0" + struct.pack("<III", 1, 1, header_len) + bytes([net, 0, 0, 0])
    out += q(data_offset, mem_size, 256 << 10, 1, 5_000_000, 123456789, 2_000_000_000)
    out += q(*range(18))
    out += hashlib.sha256(b"image").digest()
    out += struct.pack("<III", len(path), len(cmdline), len(version)) + path + cmdline + version
    assert len(out) == header_len
    out += hashlib.sha256(out).digest()
    return q(data_offset + mem_size), out


for name, kwargs in [("user", {}), ("none_cmdline", {"net": 0, "cmdline": b"a b c"}), ("tap_small", {"net": 2, "mem_size": 1 << 20})]:
    file_len, header = snapshot_header(**kwargs)
    put("snapshot_parse", name, b"\0" + file_len + header)
    put("snapshot_parse", name + "_fixsum", b"\1" + file_len + header[:-32] + bytes(32))

# Opened against hello.elf (the harness writes its SHA-256 and the checksum):
# RIP at hello's entry, RSP at the top of a 256 KiB stack in 16 MiB.
hello = os.path.join(HERE, "..", "target", "flint", "hello.elf")
if os.path.exists(hello):
    entry = struct.unpack_from("<Q", open(hello, "rb").read(), 24)[0]
    regs = list(range(18))
    regs[16] = entry  # RIP
    regs[6] = 16 << 20  # RSP
    file_len, header = snapshot_header(net=0)
    header = header[:80] + q(*regs) + header[80 + 144:]
    put("snapshot_parse", "open_hello", b"\3" + file_len + header[:-32] + bytes(32))
    # Flags bit 2: with RAM (u16 header length first; then the RAM part's
    # address, u32, and its bytes): some in the image, hostile BootInfo.
    unsummed = header[:-32] + bytes(32)
    with_ram = b"\7" + file_len + struct.pack("<H", len(unsummed)) + unsummed
    put("snapshot_parse", "open_hello_ram", with_ram + struct.pack("<I", 0x200000) + b"\x5a" * 512)
    put("snapshot_parse", "open_hello_ram_bootinfo", with_ram + struct.pack("<I", 0x1000) + b"\xff" * 200)

# --- images ---------------------------------------------------------------
image = os.path.join(HERE, "..", "target", "flint", "hello.elf")
if os.path.exists(image):
    os.makedirs(os.path.join(CORPUS, "elf_loader"), exist_ok=True)
    shutil.copy(image, os.path.join(CORPUS, "elf_loader", "hello.elf"))
elf = open(image, "rb").read() if os.path.exists(image) else b"\x7fELF\x02\x01\x01" + bytes(57)
put("elf_loader", "header_only", elf[:64])
