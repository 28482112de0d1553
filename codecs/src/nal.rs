//! NAL unit framing: Annex B start codes and length prefixes (AVCC / HVCC).

use bytes::{BufMut, Bytes, BytesMut};

use crate::CodecError;

/// Iterates the NAL units of a length-prefixed buffer.
pub fn length_prefixed(data: &[u8], length_size: usize) -> LengthPrefixed<'_> {
    LengthPrefixed { data, length_size }
}

/// Iterator returned by [`length_prefixed`].
#[derive(Debug)]
pub struct LengthPrefixed<'a> {
    data: &'a [u8],
    length_size: usize,
}

impl<'a> Iterator for LengthPrefixed<'a> {
    type Item = Result<&'a [u8], CodecError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.data.is_empty() {
            return None;
        }
        if !(1..=4).contains(&self.length_size) || self.data.len() < self.length_size {
            self.data = &[];
            return Some(Err(CodecError::Truncated("NAL length prefix")));
        }
        let len = self.data[..self.length_size].iter().fold(0usize, |a, &b| (a << 8) | b as usize);
        let rest = &self.data[self.length_size..];
        if rest.len() < len {
            self.data = &[];
            return Some(Err(CodecError::Truncated("NAL unit")));
        }
        let (nal, tail) = rest.split_at(len);
        self.data = tail;
        Some(Ok(nal))
    }
}

/// Iterates the NAL units of an Annex B byte stream (start codes 00 00 01 or
/// 00 00 00 01). Trailing zero bytes of a NAL unit are dropped.
pub fn annexb(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut starts = Vec::new();
    let mut i = 0;
    while i + 2 < data.len() {
        if data[i] == 0 && data[i + 1] == 0 && data[i + 2] == 1 {
            starts.push(i + 3);
            i += 3;
        } else {
            i += 1;
        }
    }
    let mut nals = Vec::with_capacity(starts.len());
    for (k, &s) in starts.iter().enumerate() {
        let mut end = starts.get(k + 1).map_or(data.len(), |&n| n - 3);
        while end > s && data[end - 1] == 0 {
            end -= 1;
        }
        nals.push(&data[s..end]);
    }
    nals.into_iter()
}

/// Converts length-prefixed NAL units to Annex B (4-byte start codes).
pub fn to_annexb(data: &[u8], length_size: usize) -> Result<Bytes, CodecError> {
    let mut out = BytesMut::with_capacity(data.len() + 16);
    for nal in length_prefixed(data, length_size) {
        out.put_slice(&[0, 0, 0, 1]);
        out.put_slice(nal?);
    }
    Ok(out.freeze())
}

/// Converts an Annex B byte stream to 4-byte length-prefixed NAL units.
pub fn to_length_prefixed(data: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(data.len() + 16);
    for nal in annexb(data) {
        out.put_u32(nal.len() as u32);
        out.put_slice(nal);
    }
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_between_framings() {
        let annexb_in = [0, 0, 0, 1, 0x67, 1, 2, 0, 0, 1, 0x68, 3, 0, 0, 0, 1, 0x65, 4, 5, 6];
        let lp = to_length_prefixed(&annexb_in);
        assert_eq!(&lp[..], &[0, 0, 0, 3, 0x67, 1, 2, 0, 0, 0, 2, 0x68, 3, 0, 0, 0, 4, 0x65, 4, 5, 6]);
        let back = to_annexb(&lp, 4).unwrap();
        assert_eq!(to_length_prefixed(&back), lp);
    }

    #[test]
    fn truncated_length_prefix_is_an_error() {
        assert!(to_annexb(&[0, 0, 0, 9, 1, 2], 4).is_err());
        assert!(to_annexb(&[0, 0], 4).is_err());
        assert!(to_annexb(&[1], 0).is_err());
    }
}
