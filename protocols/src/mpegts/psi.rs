//! Program-specific information: PAT and PMT sections, and the MPEG-2 CRC.

/// CRC-32/MPEG-2 (polynomial 0x04C11DB7, no reflection, init all ones).
pub fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &b in data {
        crc ^= u32::from(b) << 24;
        for _ in 0..8 {
            crc = if crc & 0x8000_0000 != 0 { (crc << 1) ^ 0x04c1_1db7 } else { crc << 1 };
        }
    }
    crc
}

/// Stream types we write and read in a PMT.
pub mod stream_type {
    /// MPEG-1 audio (layer I-III).
    pub const MPEG1_AUDIO: u8 = 0x03;
    /// MPEG-2 audio.
    pub const MPEG2_AUDIO: u8 = 0x04;
    /// PES private data (Opus, AC-3 in DVB use it with descriptors).
    pub const PRIVATE_PES: u8 = 0x06;
    /// AAC in ADTS.
    pub const AAC_ADTS: u8 = 0x0f;
    /// AAC in LATM.
    pub const AAC_LATM: u8 = 0x11;
    /// H.264.
    pub const H264: u8 = 0x1b;
    /// H.265.
    pub const H265: u8 = 0x24;
    /// AC-3 (ATSC).
    pub const AC3: u8 = 0x81;
    /// E-AC-3 (ATSC).
    pub const EAC3: u8 = 0x87;
}

fn section(table_id: u8, id: u16, body: &[u8]) -> Vec<u8> {
    // section_length counts from after the length field through the CRC.
    let len = 5 + body.len() + 4;
    let mut s = Vec::with_capacity(3 + len);
    s.push(table_id);
    s.push(0xb0 | ((len >> 8) as u8 & 0x0f));
    s.push(len as u8);
    s.extend_from_slice(&id.to_be_bytes());
    s.push(0xc1); // version 0, current_next 1
    s.push(0); // section_number
    s.push(0); // last_section_number
    s.extend_from_slice(body);
    let crc = crc32(&s);
    s.extend_from_slice(&crc.to_be_bytes());
    s
}

/// A PAT with one program.
pub fn pat(program: u16, pmt_pid: u16) -> Vec<u8> {
    let mut body = program.to_be_bytes().to_vec();
    body.extend_from_slice(&(0xe000 | pmt_pid).to_be_bytes());
    section(0x00, 1, &body)
}

/// A PMT listing `(stream_type, pid)` elementary streams.
pub fn pmt(program: u16, pcr_pid: u16, streams: &[(u8, u16)]) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&(0xe000 | pcr_pid).to_be_bytes());
    body.extend_from_slice(&0xf000u16.to_be_bytes()); // no program descriptors
    for &(st, pid) in streams {
        body.push(st);
        body.extend_from_slice(&(0xe000 | pid).to_be_bytes());
        body.extend_from_slice(&0xf000u16.to_be_bytes());
    }
    section(0x02, program, &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0x0376_e6e7);
        // A section followed by its CRC has a CRC of zero.
        let s = pat(1, 0x1000);
        assert_eq!(crc32(&s), 0);
        assert_eq!(crc32(&pmt(1, 0x100, &[(stream_type::H264, 0x100)])), 0);
    }
}
