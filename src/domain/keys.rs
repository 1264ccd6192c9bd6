//! License key strings: `XXXX-XXXX-XXXX-XXXX` over Crockford's base32 alphabet
//! (no I, L, O, U), 80 random bits from the thread CSPRNG (ChaCha, seeded by
//! the OS). Input keys are normalised wherever one is accepted.

/// Crockford base32: digits and capitals without the look-alikes I, L, O, U.
const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
const GROUPS: usize = 4;
const GROUP_LEN: usize = 4;

/// A fresh random key. 32 symbols is a power of two, so masking a random byte
/// picks each symbol with equal probability.
pub fn generate() -> String {
    let mut bytes = [0u8; GROUPS * GROUP_LEN];
    rand::fill(&mut bytes);
    let mut key = String::with_capacity(19);
    for (i, byte) in bytes.iter().enumerate() {
        if i > 0 && i % GROUP_LEN == 0 {
            key.push('-');
        }
        key.push(ALPHABET[(byte & 31) as usize] as char);
    }
    key
}

/// The canonical form of a typed key: case, spaces, dashes and Crockford's
/// look-alikes (O→0, I/L→1) forgiven. `None` when it cannot be a key.
pub fn normalize(input: &str) -> Option<String> {
    let mut symbols = String::with_capacity(16);
    for c in input.chars() {
        let c = match c.to_ascii_uppercase() {
            ' ' | '-' | '\t' => continue,
            'O' => '0',
            'I' | 'L' => '1',
            c => c,
        };
        if !c.is_ascii() || !ALPHABET.contains(&(c as u8)) || symbols.len() == GROUPS * GROUP_LEN {
            return None;
        }
        symbols.push(c);
    }
    if symbols.len() != GROUPS * GROUP_LEN {
        return None;
    }
    let groups: Vec<&str> = (0..GROUPS)
        .map(|g| &symbols[g * GROUP_LEN..(g + 1) * GROUP_LEN])
        .collect();
    Some(groups.join("-"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_have_the_format_and_round_trip() {
        for _ in 0..1000 {
            let key = generate();
            assert_eq!(key.len(), 19);
            assert_eq!(key.matches('-').count(), 3);
            assert_eq!(normalize(&key).as_deref(), Some(key.as_str()));
        }
    }

    #[test]
    fn normalises_case_spaces_dashes_and_look_alikes() {
        assert_eq!(
            normalize(" abcd efgh-jkmn pqrs ").as_deref(),
            Some("ABCD-EFGH-JKMN-PQRS")
        );
        assert_eq!(
            normalize("ABCDEFGHJKMNPQRS").as_deref(),
            Some("ABCD-EFGH-JKMN-PQRS")
        );
        assert_eq!(
            normalize("oil0-0000-0000-0000").as_deref(),
            Some("0110-0000-0000-0000")
        );
    }

    #[test]
    fn rejects_what_cannot_be_a_key() {
        for bad in [
            "",
            "ABCD",
            "ABCD-EFGH-JKMN-PQRSX",
            "ABCD-EFGH-JKMN-PQR!",
            "ÀBCD-EFGH-JKMN-PQRS",
            "UUUU-UUUU-UUUU-UUUU",
        ] {
            assert_eq!(normalize(bad), None, "{bad}");
        }
    }
}
