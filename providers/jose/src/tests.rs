use super::*;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Header, Validation, decode, encode};
use serde_json::{Value, json};

const RSA: &[u8] = include_bytes!("testdata/rsa2048.pkcs1.der");
const P256: &[u8] = include_bytes!("testdata/p256.pk8.der");
const ED25519: &[u8] = include_bytes!("testdata/ed25519.pk8.der");

fn key_for(algorithm: Algorithm) -> EncodingKey {
    match algorithm {
        Algorithm::ES256 => EncodingKey::from_ec_der(P256),
        Algorithm::EdDSA => EncodingKey::from_ed_der(ED25519),
        _ => EncodingKey::from_rsa_der(RSA),
    }
}

fn claims() -> Value {
    json!({"sub": "agent", "aud": "writ", "exp": 4_000_000_000u64})
}

#[test]
fn every_asymmetric_algorithm_round_trips_through_its_jwk() {
    install().unwrap();
    for algorithm in [Algorithm::RS256, Algorithm::PS256, Algorithm::ES256, Algorithm::EdDSA] {
        let key = key_for(algorithm);
        let token = encode(&Header::new(algorithm), &claims(), &key).unwrap();
        let jwk = Jwk::from_encoding_key(&key, algorithm).unwrap();
        let decoding = DecodingKey::from_jwk(&jwk).unwrap();
        let mut validation = Validation::new(algorithm);
        validation.set_audience(&["writ"]);
        let data =
            decode::<Value>(&token, &decoding, &validation).unwrap_or_else(|e| panic!("{algorithm:?}: {e}"));
        assert_eq!(data.claims["sub"], "agent");
    }
}

#[test]
fn a_flipped_signature_bit_is_refused() {
    install().unwrap();
    for algorithm in [Algorithm::RS256, Algorithm::PS256, Algorithm::ES256, Algorithm::EdDSA] {
        let key = key_for(algorithm);
        let token = encode(&Header::new(algorithm), &claims(), &key).unwrap();
        let (message, signed) = token.rsplit_once('.').unwrap();
        let mut bytes = signed.as_bytes().to_vec();
        bytes[3] = if bytes[3] == b'A' { b'B' } else { b'A' };
        let tampered = format!("{message}.{}", String::from_utf8(bytes).unwrap());
        let jwk = Jwk::from_encoding_key(&key, algorithm).unwrap();
        let decoding = DecodingKey::from_jwk(&jwk).unwrap();
        let mut validation = Validation::new(algorithm);
        validation.set_audience(&["writ"]);
        assert!(decode::<Value>(&tampered, &decoding, &validation).is_err(), "{algorithm:?}");
    }
}

#[test]
fn hmac_is_refused_even_when_keyed_with_a_public_key() {
    install().unwrap();
    let jwk = Jwk::from_encoding_key(&key_for(Algorithm::ES256), Algorithm::ES256).unwrap();
    let public = serde_json::to_vec(&jwk).unwrap();
    let forged = encode(&Header::new(Algorithm::HS256), &claims(), &EncodingKey::from_secret(&public));
    assert!(forged.is_err(), "signing with HMAC must be refused");
    let validation = Validation::new(Algorithm::HS256);
    let decoding = DecodingKey::from_secret(&public);
    let token = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhZ2VudCJ9.c2lnbmF0dXJl";
    assert!(decode::<Value>(token, &decoding, &validation).is_err());
}

#[test]
fn a_key_of_another_family_is_refused() {
    install().unwrap();
    let jwk = Jwk::from_encoding_key(&key_for(Algorithm::ES256), Algorithm::ES256).unwrap();
    let decoding = DecodingKey::from_jwk(&jwk).unwrap();
    let token = encode(&Header::new(Algorithm::RS256), &claims(), &key_for(Algorithm::RS256)).unwrap();
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_audience(&["writ"]);
    assert!(decode::<Value>(&token, &decoding, &validation).is_err());
}

#[test]
fn rsa_public_components_are_read_from_pkcs1() {
    let pair = sig::RsaKeyPair::from_der(RSA).unwrap();
    let (n, e) = rsa_components_from_public_key(pair.public().as_ref()).unwrap();
    let expected: sig::RsaPublicKeyComponents<Vec<u8>> = pair.public().into();
    assert_eq!(n, expected.n);
    assert_eq!(e, expected.e);
    assert!(rsa_components_from_public_key(&[0x30, 0x05, 0x02]).is_err());
}

#[test]
fn a_parsed_key_is_reused_but_only_for_its_own_algorithm() {
    install().unwrap();
    let p256 = EncodingKey::from_ec_der(P256);
    let first = new_signer(&Algorithm::ES256, &p256).unwrap();
    let second = new_signer(&Algorithm::ES256, &p256).unwrap();
    let message = b"header.payload";
    let public = sig::UnparsedPublicKey::new(
        &sig::ECDSA_P256_SHA256_FIXED,
        sig::EcdsaKeyPair::from_pkcs8(&sig::ECDSA_P256_SHA256_FIXED_SIGNING, P256, &SystemRandom::new())
            .unwrap()
            .public_key()
            .as_ref()
            .to_vec(),
    );
    for signer in [&first, &second] {
        public.verify(message, &signer.try_sign(message).unwrap()).unwrap();
    }
    // The same bytes under another algorithm are parsed for that algorithm,
    // and refused when they do not fit it.
    assert!(new_signer(&Algorithm::ES384, &p256).is_err());
    assert!(new_signer(&Algorithm::RS256, &EncodingKey::from_rsa_der(P256)).is_err());
    assert!(new_signer(&Algorithm::EdDSA, &EncodingKey::from_ed_der(P256)).is_err());
    assert!(new_signer(&Algorithm::ES256, &p256).is_ok());
}
