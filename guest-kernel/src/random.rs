//! Entropy.
//!
//! [`fill`] and [`u64()`] come from a ChaCha20 generator keyed with the 32
//! bytes of fresh host entropy in `BootInfo.seed`, so they cost no exit.
//! After every 64-byte block the generator rekeys itself from its own
//! output ("fast key erasure"), so a later memory leak does not reveal
//! earlier output. After a snapshot restore (`BootInfo.generation` bumped)
//! the new seed is mixed into the key, so restored instances diverge.
//! [`fill_from_host`] asks the monitor instead (RANDOM hypercall).

use hypercall_abi::RANDOM_MAX;
use spin::Mutex;

use crate::{generation, hypercall};

static RNG: Mutex<Option<ChaCha>> = Mutex::new(None);

/// Fills `buf` with cryptographically strong random bytes.
pub fn fill(buf: &mut [u8]) {
    let generation = generation::current();
    let mut rng = RNG.lock();
    let rng =
        rng.get_or_insert_with(|| ChaCha::new(&generation::fresh_boot_info().seed, generation));
    if rng.generation != generation {
        // Restored from a snapshot: the monitor wrote a fresh seed.
        let info = generation::fresh_boot_info();
        rng.reseed(&info.seed, generation);
    }
    rng.fill(buf);
}

/// A random `u64`.
pub fn u64() -> u64 {
    let mut bytes = [0; 8];
    fill(&mut bytes);
    u64::from_le_bytes(bytes)
}

/// Fills `buf` with entropy from the host (RANDOM hypercall, one exit per
/// 4096 bytes). Fails with the negated errno the monitor returned.
pub fn fill_from_host(buf: &mut [u8]) -> Result<(), i64> {
    for chunk in buf.chunks_mut(RANDOM_MAX as usize) {
        let ret = hypercall::random(chunk);
        if ret < 0 {
            return Err(ret);
        }
    }
    Ok(())
}

/// A ChaCha20 keystream generator with fast key erasure.
struct ChaCha {
    key: [u32; 8],
    counter: u64,
    /// Output not handed out yet: `out[pos..]`.
    out: [u8; 32],
    pos: usize,
    generation: u64,
}

impl ChaCha {
    fn new(seed: &[u8; 32], generation: u64) -> ChaCha {
        let mut key = [0; 8];
        for (word, bytes) in key.iter_mut().zip(seed.chunks_exact(4)) {
            *word = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        }
        ChaCha {
            key,
            counter: 0,
            out: [0; 32],
            pos: 32,
            generation,
        }
    }

    /// Mixes a fresh seed into the key and drops buffered output.
    fn reseed(&mut self, seed: &[u8; 32], generation: u64) {
        let fresh = ChaCha::new(seed, generation);
        for (word, new) in self.key.iter_mut().zip(fresh.key) {
            *word ^= new;
        }
        self.pos = self.out.len();
        self.generation = generation;
        self.refill();
    }

    /// One block: the first half becomes the next key, the second half is
    /// output.
    fn refill(&mut self) {
        let block = chacha20_block(&self.key, self.counter, [0, 0]);
        self.counter = self.counter.wrapping_add(1);
        self.key.copy_from_slice(&block[..8]);
        for (bytes, word) in self.out.chunks_exact_mut(4).zip(&block[8..]) {
            bytes.copy_from_slice(&word.to_le_bytes());
        }
        self.pos = 0;
    }

    fn fill(&mut self, mut buf: &mut [u8]) {
        while !buf.is_empty() {
            if self.pos == self.out.len() {
                self.refill();
            }
            let n = buf.len().min(self.out.len() - self.pos);
            let (head, rest) = buf.split_at_mut(n);
            head.copy_from_slice(&self.out[self.pos..self.pos + n]);
            // Output handed out is not kept.
            self.out[self.pos..self.pos + n].fill(0);
            self.pos += n;
            buf = rest;
        }
    }
}

/// The ChaCha20 block function (RFC 8439 section 2.3) with a 64-bit block
/// counter and a 64-bit nonce.
fn chacha20_block(key: &[u32; 8], counter: u64, nonce: [u32; 2]) -> [u32; 16] {
    let mut input = [0u32; 16];
    input[..4].copy_from_slice(&[0x6170_7865, 0x3320_646e, 0x7962_2d32, 0x6b20_6574]);
    input[4..12].copy_from_slice(key);
    input[12] = counter as u32;
    input[13] = (counter >> 32) as u32;
    input[14..].copy_from_slice(&nonce);
    let mut x = input;
    for _ in 0..10 {
        quarter_round(&mut x, 0, 4, 8, 12);
        quarter_round(&mut x, 1, 5, 9, 13);
        quarter_round(&mut x, 2, 6, 10, 14);
        quarter_round(&mut x, 3, 7, 11, 15);
        quarter_round(&mut x, 0, 5, 10, 15);
        quarter_round(&mut x, 1, 6, 11, 12);
        quarter_round(&mut x, 2, 7, 8, 13);
        quarter_round(&mut x, 3, 4, 9, 14);
    }
    for (out, inp) in x.iter_mut().zip(input) {
        *out = out.wrapping_add(inp);
    }
    x
}

fn quarter_round(x: &mut [u32; 16], a: usize, b: usize, c: usize, d: usize) {
    x[a] = x[a].wrapping_add(x[b]);
    x[d] = (x[d] ^ x[a]).rotate_left(16);
    x[c] = x[c].wrapping_add(x[d]);
    x[b] = (x[b] ^ x[c]).rotate_left(12);
    x[a] = x[a].wrapping_add(x[b]);
    x[d] = (x[d] ^ x[a]).rotate_left(8);
    x[c] = x[c].wrapping_add(x[d]);
    x[b] = (x[b] ^ x[c]).rotate_left(7);
}

#[cfg(test)]
mod tests {
    use super::{chacha20_block, ChaCha};

    #[test]
    fn block_function_matches_rfc_8439_test_vector() {
        // RFC 8439 2.3.2: key 00..1f, counter 1, nonce 00:00:00:09 00:00:00:4a 00:00:00:00.
        // With a 32-bit counter the nonce words are (0x09000000, 0x4a000000, 0);
        // our 64-bit counter carries the first nonce word in its high half.
        let key: [u32; 8] = core::array::from_fn(|i| {
            let b = (i * 4) as u32;
            u32::from_le_bytes([b as u8, (b + 1) as u8, (b + 2) as u8, (b + 3) as u8])
        });
        let counter = 1 | (0x0900_0000u64 << 32);
        let out = chacha20_block(&key, counter, [0x4a00_0000, 0]);
        assert_eq!(out[0], 0xe4e7_f110);
        assert_eq!(out[1], 0x1559_3bd1);
        assert_eq!(out[15], 0x4e3c_50a2);
    }

    #[test]
    fn same_seed_same_stream_and_reseed_diverges() {
        let seed = [7u8; 32];
        let (mut a, mut b) = (ChaCha::new(&seed, 0), ChaCha::new(&seed, 0));
        let (mut x, mut y) = ([0u8; 100], [0u8; 100]);
        a.fill(&mut x);
        b.fill(&mut y);
        assert_eq!(x, y);
        assert_ne!(x[..32], x[32..64]);
        b.reseed(&[9u8; 32], 1);
        a.fill(&mut x);
        b.fill(&mut y);
        assert_ne!(x, y);
    }
}
