//! Where JSON strings end, 64 bytes at a time and without a branch per escape.
//!
//! The text is cut into 64-byte blocks; each block becomes bit masks (bit k = byte k of the block):
//! the quotes that close or open a string (not escaped), the bytes that would be invalid inside a string
//! (control characters, and escaped characters that are not a JSON escape), and the `\u` escapes (whose four
//! hex digits are checked one by one). Which characters a backslash escapes comes from simdjson's
//! branch-free odd-backslash-run method. Byte comparisons use SSE2 on x86-64 (always present there) and
//! eight-bytes-at-a-time integer arithmetic elsewhere; both give the same masks (tested).
//!
//! Backslashes outside strings are not JSON: the scanner stops at them before these masks are consulted
//! past them, so treating every backslash as an escape is sound for the texts it accepts.

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Block {
    /// Quotes not escaped by a backslash.
    pub quote: u64,
    /// Bytes not allowed inside a string: controls (< 0x20) and escaped bytes other than `"\/bfnrtu`.
    pub bad: u64,
    /// The `u` of `\u` escapes.
    pub unicode: u64,
}

/// Raw byte classes of one block.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Classes {
    quote: u64,
    backslash: u64,
    control: u64,
    /// One of `"\/bfnrtu` (what may follow a backslash).
    escapable: u64,
    u: u64,
}

/// The blocks of `text` (bytes 64k..64k+64 in block k), the last one padded with spaces.
pub(super) fn blocks(text: &[u8]) -> Vec<Block> {
    let mut out = Vec::with_capacity(text.len().div_ceil(64));
    let mut carry = 0u64;
    let mut chunks = text.chunks_exact(64);
    for chunk in &mut chunks {
        out.push(block(classes(chunk.try_into().expect("64 bytes")), &mut carry));
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut padded = [b' '; 64];
        padded[..rest.len()].copy_from_slice(rest);
        out.push(block(classes(&padded), &mut carry));
    }
    out
}

fn block(c: Classes, carry: &mut u64) -> Block {
    let escaped = escaped(c.backslash, carry);
    Block { quote: c.quote & !escaped, bad: c.control | (escaped & !c.escapable), unicode: escaped & c.u }
}

/// The bytes escaped by a backslash (the byte after each odd-numbered backslash of a run); `carry` says
/// whether the previous block ended with an unfinished escape. simdjson's `find_escaped_branchless`.
fn escaped(backslash: u64, carry: &mut u64) -> u64 {
    const EVEN: u64 = 0x5555_5555_5555_5555;
    let backslash = backslash & !*carry;
    let follows_escape = (backslash << 1) | *carry;
    let odd_starts = backslash & !EVEN & !follows_escape;
    let (even_runs, overflow) = odd_starts.overflowing_add(backslash);
    *carry = overflow as u64;
    (EVEN ^ (even_runs << 1)) & follows_escape
}

#[cfg(target_arch = "x86_64")]
fn classes(b: &[u8; 64]) -> Classes {
    use std::arch::x86_64::*;
    let mut c = Classes::default();
    // SAFETY: SSE2 is part of the x86-64 baseline; every load reads 16 bytes inside the 64-byte array.
    #[allow(unused_unsafe)]
    unsafe {
        let eq = |v: __m128i, byte: u8| _mm_cmpeq_epi8(v, _mm_set1_epi8(byte as i8));
        let bits = |m: __m128i| _mm_movemask_epi8(m) as u16 as u64;
        for part in 0..4 {
            let v = _mm_loadu_si128(b.as_ptr().add(part * 16) as *const __m128i);
            let shift = part * 16;
            let u = eq(v, b'u');
            // x < 0x20 (unsigned) <=> min(x, 0x1f) == x
            let control = _mm_cmpeq_epi8(_mm_min_epu8(v, _mm_set1_epi8(0x1f)), v);
            let backslash = eq(v, b'\\');
            let quote = eq(v, b'"');
            let mut escapable = _mm_or_si128(_mm_or_si128(quote, backslash), _mm_or_si128(u, eq(v, b'/')));
            for byte in [b'b', b'f', b'n', b'r', b't'] {
                escapable = _mm_or_si128(escapable, eq(v, byte));
            }
            c.quote |= bits(quote) << shift;
            c.backslash |= bits(backslash) << shift;
            c.control |= bits(control) << shift;
            c.escapable |= bits(escapable) << shift;
            c.u |= bits(u) << shift;
        }
    }
    c
}

#[cfg(not(target_arch = "x86_64"))]
fn classes(b: &[u8; 64]) -> Classes {
    classes_swar(b)
}

/// The same classes with plain integer arithmetic, eight bytes at a time.
#[cfg_attr(target_arch = "x86_64", allow(dead_code))]
fn classes_swar(b: &[u8; 64]) -> Classes {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    // 0x80 in every zero byte of y, exactly (no borrow between bytes).
    let zero = |y: u64| !(((y & LOW7) + LOW7) | y) & HI;
    // One bit per byte: byte k's 0x80 becomes bit k.
    let bits = |m: u64| ((m >> 7).wrapping_mul(0x0102_0408_1020_4080)) >> 56;
    let eq = |x: u64, byte: u8| zero(x ^ (LO * byte as u64));
    let mut c = Classes::default();
    for w in 0..8 {
        let x = u64::from_le_bytes(b[w * 8..w * 8 + 8].try_into().expect("8 bytes"));
        let shift = w * 8;
        let quote = eq(x, b'"');
        let backslash = eq(x, b'\\');
        let u = eq(x, b'u');
        let escapable = [b'/', b'b', b'f', b'n', b'r', b't'].iter().fold(quote | backslash | u, |m, &c| m | eq(x, c));
        c.quote |= bits(quote) << shift;
        c.backslash |= bits(backslash) << shift;
        c.control |= bits(zero(x & (LO * 0xe0))) << shift;
        c.escapable |= bits(escapable) << shift;
        c.u |= bits(u) << shift;
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Byte by byte, the obvious way.
    fn reference(text: &[u8]) -> Vec<Block> {
        let mut padded = text.to_vec();
        padded.resize(text.len().div_ceil(64) * 64, b' ');
        let mut out = vec![Block::default(); padded.len() / 64];
        let mut pending_escape = false;
        for (i, &c) in padded.iter().enumerate() {
            let (blk, bit) = (&mut out[i / 64], 1u64 << (i % 64));
            let escaped = std::mem::take(&mut pending_escape);
            if escaped {
                if !b"\"\\/bfnrtu".contains(&c) {
                    blk.bad |= bit;
                }
                if c == b'u' {
                    blk.unicode |= bit;
                }
            } else if c == b'\\' {
                pending_escape = true;
            } else if c == b'"' {
                blk.quote |= bit;
            }
            if c < 0x20 {
                blk.bad |= bit;
            }
        }
        out
    }

    #[test]
    fn both_byte_classifiers_agree_on_every_byte_value() {
        let all: Vec<u8> = (0..=255u8).collect();
        for start in 0..64 {
            let mut text = all.clone();
            text.rotate_left(start);
            for chunk in text.chunks_exact(64) {
                let chunk: &[u8; 64] = chunk.try_into().unwrap();
                assert_eq!(classes(chunk), classes_swar(chunk));
            }
        }
    }

    #[test]
    fn masks_match_the_byte_by_byte_reading_across_block_edges() {
        // Runs of backslashes of every length ending at every offset around a block edge.
        for run in 0..9 {
            for at in 50..80 {
                for after in [b'"', b'n', b'x', b'u', b'\\', b'a'] {
                    let mut text = vec![b'a'; 140];
                    for k in 0..run {
                        text[at + k] = b'\\';
                    }
                    text[at + run] = after;
                    assert_eq!(blocks(&text), reference(&text), "run {run} at {at} then {}", after as char);
                }
            }
        }
        // Pseudo-random texts over the interesting bytes.
        let alphabet = b"\\\\\\\"\"nu/x \n\x01tb";
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        for len in [1, 63, 64, 65, 127, 128, 200, 1000] {
            for _ in 0..50 {
                let text: Vec<u8> = (0..len)
                    .map(|_| {
                        rng ^= rng << 13;
                        rng ^= rng >> 7;
                        rng ^= rng << 17;
                        alphabet[(rng % alphabet.len() as u64) as usize]
                    })
                    .collect();
                assert_eq!(blocks(&text), reference(&text), "{:?}", String::from_utf8_lossy(&text));
            }
        }
    }
}
