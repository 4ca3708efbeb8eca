//! LEB128 varints, the integers of raftd's binary formats (the store image in snapshots, the
//! log's records of entries): seven bits a byte, low bits first, the high bit set on all but
//! the last byte. Small numbers (lengths, kinds, revisions of a young store) take one to three
//! bytes instead of eight.

/// Appends `n`.
pub fn put(buf: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        buf.push((n as u8) | 0x80);
        n >>= 7;
    }
    buf.push(n as u8);
}

/// Why a varint could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VarintError {
    /// The bytes ended inside it.
    Truncated,
    /// It has more than 64 bits.
    TooLong,
}

/// Reads the varint at `*at`, moving `*at` past it; on error `*at` is where reading stopped.
pub fn read(bytes: &[u8], at: &mut usize) -> Result<u64, VarintError> {
    let mut n: u64 = 0;
    for shift in (0..64).step_by(7) {
        let Some(&b) = bytes.get(*at) else {
            return Err(VarintError::Truncated);
        };
        *at += 1;
        let bits = u64::from(b & 0x7f);
        if shift == 63 && bits > 1 {
            return Err(VarintError::TooLong);
        }
        n |= bits << shift;
        if b & 0x80 == 0 {
            return Ok(n);
        }
    }
    Err(VarintError::TooLong)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip_and_overlong_ones_are_refused() {
        for n in [
            0,
            1,
            127,
            128,
            300,
            u64::from(u32::MAX),
            u64::MAX - 1,
            u64::MAX,
        ] {
            let mut buf = Vec::new();
            put(&mut buf, n);
            let mut at = 0;
            assert_eq!(read(&buf, &mut at), Ok(n));
            assert_eq!(at, buf.len());
        }
        assert_eq!(read(&[0xff; 11], &mut 0), Err(VarintError::TooLong));
        let too_big = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02];
        assert_eq!(read(&too_big, &mut 0), Err(VarintError::TooLong));
        assert_eq!(read(&[0x80, 0x80], &mut 0), Err(VarintError::Truncated));
        assert_eq!(read(&[], &mut 0), Err(VarintError::Truncated));
    }
}
