//! A big-endian bit reader with Exp-Golomb codes, over RBSP bytes.

use crate::CodecError;

pub(crate) struct BitReader<'a> {
    data: &'a [u8],
    pos: usize,
    what: &'static str,
}

impl<'a> BitReader<'a> {
    pub(crate) fn new(data: &'a [u8], what: &'static str) -> Self {
        BitReader { data, pos: 0, what }
    }

    pub(crate) fn bit(&mut self) -> Result<bool, CodecError> {
        let byte = self.data.get(self.pos / 8).ok_or(CodecError::Truncated(self.what))?;
        let b = (byte >> (7 - self.pos % 8)) & 1;
        self.pos += 1;
        Ok(b == 1)
    }

    pub(crate) fn bits(&mut self, n: u32) -> Result<u64, CodecError> {
        debug_assert!(n <= 64);
        let mut v = 0u64;
        for _ in 0..n {
            v = (v << 1) | u64::from(self.bit()?);
        }
        Ok(v)
    }

    pub(crate) fn skip(&mut self, n: usize) -> Result<(), CodecError> {
        if self.pos + n > self.data.len() * 8 {
            return Err(CodecError::Truncated(self.what));
        }
        self.pos += n;
        Ok(())
    }

    /// Unsigned Exp-Golomb.
    pub(crate) fn ue(&mut self) -> Result<u64, CodecError> {
        let mut zeros = 0;
        while !self.bit()? {
            zeros += 1;
            if zeros > 32 {
                return Err(CodecError::Invalid { what: self.what, value: zeros });
            }
        }
        Ok((1u64 << zeros) - 1 + self.bits(zeros as u32)?)
    }

    /// Signed Exp-Golomb.
    pub(crate) fn se(&mut self) -> Result<i64, CodecError> {
        let k = self.ue()? as i64;
        Ok(if k % 2 == 1 { (k + 1) / 2 } else { -(k / 2) })
    }

    /// AV1's uvlc().
    pub(crate) fn uvlc(&mut self) -> Result<u64, CodecError> {
        let mut zeros = 0;
        while !self.bit()? {
            zeros += 1;
            if zeros >= 32 {
                return Ok(u64::from(u32::MAX));
            }
        }
        Ok((1u64 << zeros) - 1 + self.bits(zeros as u32)?)
    }
}

/// Removes emulation-prevention bytes (00 00 03 -> 00 00).
pub(crate) fn rbsp(nal: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(nal.len());
    let mut zeros = 0;
    for &b in nal {
        if zeros >= 2 && b == 3 {
            zeros = 0;
            continue;
        }
        zeros = if b == 0 { zeros + 1 } else { 0 };
        out.push(b);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_golomb() {
        // 1 | 010 | 011 | 00100 | 00101 -> ue 0,1,2,3,4
        let data = [0b1010_0110, 0b0100_0010, 0b1000_0000];
        let mut r = BitReader::new(&data, "t");
        let v: Vec<u64> = (0..5).map(|_| r.ue().unwrap()).collect();
        assert_eq!(v, [0, 1, 2, 3, 4]);
        let mut r = BitReader::new(&data, "t");
        let v: Vec<i64> = (0..5).map(|_| r.se().unwrap()).collect();
        assert_eq!(v, [0, 1, -1, 2, -2]);
    }

    #[test]
    fn truncation_is_an_error() {
        let mut r = BitReader::new(&[0], "t");
        assert_eq!(r.ue(), Err(CodecError::Truncated("t")));
    }

    #[test]
    fn rbsp_strips_emulation_prevention() {
        assert_eq!(rbsp(&[0, 0, 3, 1, 0, 0, 3, 0, 3]), vec![0, 0, 1, 0, 0, 0, 3]);
    }
}
