//! The little of STUN (RFC 8489) the shared socket needs outside str0m:
//! reading the USERNAME of a binding request to find which session a new
//! 5-tuple belongs to, and asking a STUN server for our public address.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

const MAGIC: u32 = 0x2112_a442;
const HEADER: usize = 20;
const BINDING_REQUEST: u16 = 0x0001;
const BINDING_SUCCESS: u16 = 0x0101;
const ATTR_USERNAME: u16 = 0x0006;
const ATTR_MAPPED_ADDRESS: u16 = 0x0001;
const ATTR_XOR_MAPPED_ADDRESS: u16 = 0x0020;

/// Whether a datagram looks like STUN (RFC 7983 demultiplexing: first byte
/// 0..=3, and the magic cookie).
pub fn is_stun(packet: &[u8]) -> bool {
    packet.len() >= HEADER && packet[0] < 4 && u32::from_be_bytes([packet[4], packet[5], packet[6], packet[7]]) == MAGIC
}

fn message_type(packet: &[u8]) -> u16 {
    u16::from_be_bytes([packet[0], packet[1]])
}

/// The attributes of a STUN message, as (type, value); stops at the first
/// malformed one.
fn attributes(packet: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    let declared =
        usize::from(u16::from_be_bytes([packet.get(2).copied().unwrap_or(0), packet.get(3).copied().unwrap_or(0)]));
    let body = packet.get(HEADER..HEADER.saturating_add(declared).min(packet.len())).unwrap_or_default();
    let mut pos = 0;
    std::iter::from_fn(move || {
        let head = body.get(pos..pos + 4)?;
        let kind = u16::from_be_bytes([head[0], head[1]]);
        let len = usize::from(u16::from_be_bytes([head[2], head[3]]));
        let value = body.get(pos + 4..pos + 4 + len)?;
        pos += 4 + len.div_ceil(4) * 4;
        Some((kind, value))
    })
}

/// The local ufrag a binding request is addressed to: the part of its
/// USERNAME before the colon (`local:remote`, RFC 8445 section 7.2.2).
pub fn request_ufrag(packet: &[u8]) -> Option<&str> {
    if !is_stun(packet) || message_type(packet) != BINDING_REQUEST {
        return None;
    }
    let (_, value) = attributes(packet).find(|(k, _)| *k == ATTR_USERNAME)?;
    let name = std::str::from_utf8(value).ok()?;
    name.split(':').next().filter(|s| !s.is_empty())
}

/// A binding request to send to a STUN server, with its transaction id.
pub fn binding_request(transaction: [u8; 12]) -> Vec<u8> {
    let mut m = Vec::with_capacity(HEADER);
    m.extend_from_slice(&BINDING_REQUEST.to_be_bytes());
    m.extend_from_slice(&0u16.to_be_bytes());
    m.extend_from_slice(&MAGIC.to_be_bytes());
    m.extend_from_slice(&transaction);
    m
}

/// The transaction id of a STUN message.
pub fn transaction(packet: &[u8]) -> Option<[u8; 12]> {
    if !is_stun(packet) {
        return None;
    }
    packet.get(8..20)?.try_into().ok()
}

/// The address a binding success response reports (XOR-MAPPED-ADDRESS, or
/// the old MAPPED-ADDRESS).
pub fn mapped_address(packet: &[u8]) -> Option<SocketAddr> {
    if !is_stun(packet) || message_type(packet) != BINDING_SUCCESS {
        return None;
    }
    let id: [u8; 12] = packet.get(8..20)?.try_into().ok()?;
    let mut plain = None;
    for (kind, v) in attributes(packet) {
        match kind {
            ATTR_XOR_MAPPED_ADDRESS => return decode_address(v, Some(&id)),
            ATTR_MAPPED_ADDRESS => plain = decode_address(v, None),
            _ => {}
        }
    }
    plain
}

fn decode_address(v: &[u8], xor: Option<&[u8; 12]>) -> Option<SocketAddr> {
    let family = *v.get(1)?;
    let mut port = u16::from_be_bytes([*v.get(2)?, *v.get(3)?]);
    let mut key = [0u8; 16];
    key[..4].copy_from_slice(&MAGIC.to_be_bytes());
    if let Some(id) = xor {
        port ^= (MAGIC >> 16) as u16;
        key[4..].copy_from_slice(id);
    }
    let ip = match family {
        1 => {
            let mut b: [u8; 4] = v.get(4..8)?.try_into().ok()?;
            if xor.is_some() {
                b.iter_mut().zip(&key).for_each(|(x, k)| *x ^= k);
            }
            IpAddr::V4(Ipv4Addr::from(b))
        }
        2 => {
            let mut b: [u8; 16] = v.get(4..20)?.try_into().ok()?;
            if xor.is_some() {
                b.iter_mut().zip(&key).for_each(|(x, k)| *x ^= k);
            }
            IpAddr::V6(Ipv6Addr::from(b))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// Builds a binding success response carrying XOR-MAPPED-ADDRESS (what a
/// STUN server answers; used by tests and the fuzz seeds).
pub fn binding_success(transaction: [u8; 12], mapped: SocketAddr) -> Vec<u8> {
    let mut key = [0u8; 16];
    key[..4].copy_from_slice(&MAGIC.to_be_bytes());
    key[4..].copy_from_slice(&transaction);
    let mut value = vec![0u8];
    let port = mapped.port() ^ (MAGIC >> 16) as u16;
    match mapped.ip() {
        IpAddr::V4(ip) => {
            value.push(1);
            value.extend_from_slice(&port.to_be_bytes());
            value.extend(ip.octets().iter().zip(&key).map(|(b, k)| b ^ k));
        }
        IpAddr::V6(ip) => {
            value.push(2);
            value.extend_from_slice(&port.to_be_bytes());
            value.extend(ip.octets().iter().zip(&key).map(|(b, k)| b ^ k));
        }
    }
    let mut m = Vec::with_capacity(HEADER + 4 + value.len());
    m.extend_from_slice(&BINDING_SUCCESS.to_be_bytes());
    m.extend_from_slice(&((4 + value.len()) as u16).to_be_bytes());
    m.extend_from_slice(&MAGIC.to_be_bytes());
    m.extend_from_slice(&transaction);
    m.extend_from_slice(&ATTR_XOR_MAPPED_ADDRESS.to_be_bytes());
    m.extend_from_slice(&(value.len() as u16).to_be_bytes());
    m.extend_from_slice(&value);
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_local_ufrag_of_a_binding_request() {
        let mut m = binding_request([7; 12]);
        let user = b"srvufrag:clientufrag";
        m.extend_from_slice(&ATTR_USERNAME.to_be_bytes());
        m.extend_from_slice(&(user.len() as u16).to_be_bytes());
        m.extend_from_slice(user);
        m.extend_from_slice(&[0; 4][..user.len().div_ceil(4) * 4 - user.len()]);
        let len = (m.len() - HEADER) as u16;
        m[2..4].copy_from_slice(&len.to_be_bytes());
        assert_eq!(request_ufrag(&m), Some("srvufrag"));
        assert_eq!(request_ufrag(&m[..m.len() - 3]), None, "a cut attribute is ignored");
        assert_eq!(request_ufrag(&[0x80; 40]), None, "RTP is not STUN");
    }

    #[test]
    fn mapped_address_round_trips() {
        for addr in ["203.0.113.7:8189", "[2001:db8::7]:8189"] {
            let addr: SocketAddr = addr.parse().unwrap();
            let m = binding_success([3; 12], addr);
            assert_eq!(transaction(&m), Some([3; 12]));
            assert_eq!(mapped_address(&m), Some(addr));
        }
        assert_eq!(mapped_address(&binding_request([1; 12])), None);
    }
}
