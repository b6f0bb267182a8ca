//! `thoughtSignature`s: opaque, HMAC-authenticated tokens minted on model parts, naming the
//! stored artefact (image) or response (text) they belong to.
//!
//! Layout (then standard base64): `b"pls1"`, a kind byte (`i` image, `t` text), the 16-byte
//! id, and the first 16 bytes of HMAC-SHA256(secret, everything before). Forged or altered
//! signatures fail the HMAC check and are rejected with 400.

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use plantain_imageio::B64;

const MAGIC: &[u8; 4] = b"pls1";

/// What a valid signature names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Signed {
    Image(String),
    Text(String),
}

#[derive(Clone)]
pub struct Signer {
    secret: Vec<u8>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum SignatureError {
    /// Not base64, wrong length or magic: not one of ours.
    Malformed,
    /// Ours in shape, but the HMAC does not match (forged, altered, or another server's secret).
    BadMac,
}

impl Signer {
    pub fn new(secret: Vec<u8>) -> Self {
        Signer { secret }
    }

    fn mac(&self, msg: &[u8]) -> [u8; 16] {
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(&self.secret).expect("HMAC takes any key length");
        m.update(msg);
        let full = m.finalize().into_bytes();
        let mut out = [0u8; 16];
        out.copy_from_slice(&full[..16]);
        out
    }

    /// `id` is a 32-hex-digit artefact / response id.
    pub fn mint(&self, what: &Signed) -> String {
        let (kind, id) = match what {
            Signed::Image(id) => (b'i', id),
            Signed::Text(id) => (b't', id),
        };
        let mut msg = MAGIC.to_vec();
        msg.push(kind);
        msg.extend(hex::decode(id).unwrap_or_else(|_| id.as_bytes().to_vec()));
        let mac = self.mac(&msg);
        msg.extend(mac);
        B64.encode(msg)
    }

    pub fn check(&self, sig: &str) -> Result<Signed, SignatureError> {
        let raw = plantain_imageio::decode_base64(sig, "thoughtSignature").map_err(|_| SignatureError::Malformed)?;
        if raw.len() != 4 + 1 + 16 + 16 || &raw[..4] != MAGIC {
            return Err(SignatureError::Malformed);
        }
        let (msg, mac) = raw.split_at(raw.len() - 16);
        let expected = self.mac(msg);
        if !same_mac(mac, &expected) {
            return Err(SignatureError::BadMac);
        }
        let id = hex::encode(&msg[5..]);
        match msg[4] {
            b'i' => Ok(Signed::Image(id)),
            b't' => Ok(Signed::Text(id)),
            _ => Err(SignatureError::Malformed),
        }
    }
}

/// Whether a presented MAC is the expected one, in constant time (no early exit on a mismatch).
fn same_mac(given: &[u8], expected: &[u8]) -> bool {
    given.len() == expected.len() && given.iter().zip(expected).fold(0u8, |a, (x, y)| a | (x ^ y)) == 0
}

/// How long an image URL handed to a client (`/v1/blobs/…?exp=…&sig=…`) stays valid, as OpenAI's
/// image URLs do (60 minutes); a client that needs it later asks for the image again.
pub const BLOB_URL_TTL_SECS: i64 = 3600;

/// Why a blob URL is refused.
#[derive(Debug, PartialEq, Eq)]
pub enum BlobUrlError {
    /// No `exp`/`sig`, or not ours: not issued by a node with this server's secret.
    NotSigned,
    /// Issued, and expired at this unix time.
    Expired(i64),
}

impl Signer {
    /// The query that authorises fetching `name` until `expires` (unix seconds).
    pub fn blob_query(&self, name: &str, expires: i64) -> String {
        format!("exp={expires}&sig={}", hex::encode(self.mac(format!("blob:{name}:{expires}").as_bytes())))
    }

    /// Checks the query of a blob URL at `now`.
    pub fn check_blob(&self, name: &str, query: Option<&str>, now: i64) -> Result<(), BlobUrlError> {
        let param = |k: &str| query?.split('&').find_map(|kv| kv.split_once('=').filter(|(n, _)| *n == k).map(|(_, v)| v));
        let expires: i64 = param("exp").and_then(|e| e.parse().ok()).ok_or(BlobUrlError::NotSigned)?;
        let given = param("sig").and_then(|s| hex::decode(s).ok()).ok_or(BlobUrlError::NotSigned)?;
        let expected = self.mac(format!("blob:{name}:{expires}").as_bytes());
        if !same_mac(&given, &expected) {
            return Err(BlobUrlError::NotSigned);
        }
        if now >= expires {
            return Err(BlobUrlError::Expired(expires));
        }
        Ok(())
    }
}

pub use plantain_service::new_id;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_forgery() {
        let s = Signer::new(b"secret".to_vec());
        let id = new_id();
        let sig = s.mint(&Signed::Image(id.clone()));
        assert_eq!(s.check(&sig), Ok(Signed::Image(id.clone())));
        let t = s.mint(&Signed::Text(id.clone()));
        assert_eq!(s.check(&t), Ok(Signed::Text(id)));
        let mut raw = B64.decode(&sig).unwrap();
        raw[6] ^= 1;
        assert_eq!(s.check(&B64.encode(&raw)), Err(SignatureError::BadMac));
        assert_eq!(Signer::new(b"other".to_vec()).check(&sig), Err(SignatureError::BadMac));
        assert_eq!(s.check("bm90IG91cnM="), Err(SignatureError::Malformed));
    }

    #[test]
    fn blob_urls_are_signed_per_name_and_expire() {
        let s = Signer::new(b"secret".to_vec());
        let q = s.blob_query("ab.png", 1000);
        assert_eq!(s.check_blob("ab.png", Some(&q), 999), Ok(()));
        assert_eq!(s.check_blob("ab.png", Some(&q), 1000), Err(BlobUrlError::Expired(1000)));
        assert_eq!(s.check_blob("cd.png", Some(&q), 999), Err(BlobUrlError::NotSigned), "another image");
        let later = q.replace("exp=1000", "exp=9000");
        assert_eq!(s.check_blob("ab.png", Some(&later), 999), Err(BlobUrlError::NotSigned), "a stretched expiry");
        assert_eq!(Signer::new(b"other".to_vec()).check_blob("ab.png", Some(&q), 999), Err(BlobUrlError::NotSigned));
        assert_eq!(s.check_blob("ab.png", None, 999), Err(BlobUrlError::NotSigned));
        assert_eq!(s.check_blob("ab.png", Some("exp=1000&sig=zz"), 999), Err(BlobUrlError::NotSigned));
    }
}
