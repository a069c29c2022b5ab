//! Activation codes: how a provider's router licenses reach tenant admins, who type them in.
//!
//! A code is 15 symbols shown in three groups of five, `04106-1050R-3GGEZ`:
//!
//! - **Alphabet**: Crockford's base 32 ([`ALPHABET`]), the digits and the upper-case letters
//!   without I, L, O and U. Reading a code back forgives the usual look-alikes: `O` is read as
//!   `0`, and `I` and `L` as `1`. `U` is not a symbol, and no look-alike of one.
//! - **Randomness**: 64 bits, which the caller draws and hands to [`ActivationCode::generate`],
//!   so this module stays pure. Different bits always give different codes.
//! - **Check**: the 15 symbols are the 75-bit number `random << 11 | check`, and the 11 check
//!   bits are chosen so that this number is a multiple of the prime 2039 (the largest prime
//!   below 2^11). Changing the symbol at position `k` (counted from the right) from `a` to `b`
//!   changes the number by `(b - a) * 32^k`; swapping adjacent symbols `a` and `b` changes it by
//!   `(b - a) * 31 * 32^k`; swapping `a` and `b` around a middle symbol, by
//!   `(b - a) * 1023 * 32^k`. As `0 < |b - a| < 32` and 2039 is a prime that divides neither 32,
//!   31 nor 1023, none of these changes is a multiple of 2039: every single-symbol substitution
//!   and every adjacent or jump transposition is caught before any lookup. Other typos slip
//!   through about once in 2039.
//!
//! Reading is forgiving about form (case, and spaces or dashes anywhere) but strict about
//! content: see [`CodeError`].

use std::fmt::{self, Write};
use std::str::FromStr;

use crate::Timestamp;

/// The 32 symbols of a code, in value order: Crockford's base 32.
pub const ALPHABET: &str = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// Symbols in a code.
const SYMBOLS: usize = 15;
/// Symbols per group when shown to people.
const GROUP: usize = 5;
/// Check bits at the end of a code's number.
const CHECK_BITS: u32 = 11;
/// The prime every code's number is a multiple of.
const PRIME: u128 = 2039;

/// A router license's activation code, held in its canonical form.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ActivationCode(String);

impl ActivationCode {
    /// The code for 64 random bits drawn by the caller from a secure source.
    pub fn generate(random: [u8; 8]) -> Self {
        let shifted = u128::from(u64::from_be_bytes(random)) << CHECK_BITS;
        ActivationCode::spell(shifted | check_for(shifted))
    }

    /// The code spelling `number`, most significant symbol first.
    fn spell(number: u128) -> Self {
        let alphabet = ALPHABET.as_bytes();
        let canonical = (0..SYMBOLS)
            .rev()
            .map(|k| char::from(alphabet[((number >> (5 * k)) & 31) as usize]))
            .collect();
        ActivationCode(canonical)
    }

    /// The form stored and looked up: the 15 symbols, upper case, without dashes.
    pub fn canonical(&self) -> &str {
        &self.0
    }
}

/// Shows the code for people: `04106-1050R-3GGEZ`.
impl fmt::Display for ActivationCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, symbol) in self.0.chars().enumerate() {
            if index > 0 && index % GROUP == 0 {
                f.write_char('-')?;
            }
            f.write_char(symbol)?;
        }
        Ok(())
    }
}

/// Reads a code as people type it: case does not matter, spaces and dashes may be anywhere, and
/// `O`, `I` and `L` are read as `0`, `1` and `1`.
///
/// A character that is no symbol is reported first, then a wrong number of symbols, then check
/// bits that do not match.
impl FromStr for ActivationCode {
    type Err = CodeError;

    fn from_str(input: &str) -> Result<Self, CodeError> {
        let mut number: u128 = 0;
        let mut symbols = 0;
        for character in input.chars() {
            if character == '-' || character.is_whitespace() {
                continue;
            }
            let value = symbol_value(character).ok_or(CodeError::InvalidCharacter(character))?;
            symbols += 1;
            if symbols <= SYMBOLS {
                number = number << 5 | u128::from(value);
            }
        }
        if symbols != SYMBOLS {
            return Err(CodeError::InvalidLength { symbols });
        }
        let check_mask = (1 << CHECK_BITS) - 1;
        if number & check_mask == check_for(number & !check_mask) {
            Ok(ActivationCode::spell(number))
        } else {
            Err(CodeError::Typo)
        }
    }
}

/// The check bits that make `shifted | check` a multiple of [`PRIME`], for `shifted` whose
/// low [`CHECK_BITS`] bits are clear.
fn check_for(shifted: u128) -> u128 {
    (PRIME - shifted % PRIME) % PRIME
}

/// The value of a symbol as typed, look-alikes included.
fn symbol_value(character: char) -> Option<u8> {
    let symbol = match character.to_ascii_uppercase() {
        'O' => '0',
        'I' | 'L' => '1',
        other => other,
    };
    ALPHABET
        .chars()
        .position(|candidate| candidate == symbol)
        .and_then(|value| u8::try_from(value).ok())
}

/// Why a typed activation code was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CodeError {
    #[error("an activation code has {SYMBOLS} characters, not {symbols} (dashes and spaces aside)")]
    InvalidLength { symbols: usize },
    #[error("{0:?} cannot appear in an activation code")]
    InvalidCharacter(char),
    #[error("the activation code has a typo: check it and type it again")]
    Typo,
}

impl CodeError {
    /// A stable identifier for the error, for APIs and translations.
    pub fn code(&self) -> &'static str {
        match self {
            CodeError::InvalidLength { .. } => "invalid_code_length",
            CodeError::InvalidCharacter(_) => "invalid_code_character",
            CodeError::Typo => "code_typo",
        }
    }
}

/// When a license redeemed at `redeemed_at` from a code for `term_months` months ends: the same
/// day and time that many months later (the month's last day when it is shorter). `None` when
/// that lies beyond the calendar.
pub fn term_end(redeemed_at: Timestamp, term_months: u32) -> Option<Timestamp> {
    redeemed_at.checked_add_months(chrono::Months::new(term_months))
}

/// How many failed redemption attempts a tenant may make: a bucket of `capacity` attempts that
/// refills by one every `refill_every`. Only lookups that find no code for the tenant take from
/// it (a typo is caught by the check characters before any lookup and costs nothing), so a
/// tenant importing many good codes is never slowed, while guessing is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptBudget {
    capacity: u32,
    refill_every: chrono::Duration,
    /// Attempts left as of `as_of`.
    left: u32,
    as_of: Timestamp,
}

impl AttemptBudget {
    /// A full bucket at `now`. `capacity` is at least 1 and `refill_every` positive.
    pub fn new(capacity: u32, refill_every: chrono::Duration, now: Timestamp) -> Self {
        assert!(capacity >= 1 && refill_every > chrono::Duration::zero());
        Self {
            capacity,
            refill_every,
            left: capacity,
            as_of: now,
        }
    }

    fn refill(&mut self, now: Timestamp) {
        if now <= self.as_of {
            return;
        }
        let earned = (now - self.as_of).num_milliseconds() / self.refill_every.num_milliseconds();
        let earned = u32::try_from(earned).unwrap_or(u32::MAX);
        if self.left.saturating_add(earned) >= self.capacity {
            self.left = self.capacity;
            self.as_of = now;
        } else if earned > 0 {
            self.left += earned;
            self.as_of += self.refill_every * i32::try_from(earned).unwrap_or(i32::MAX);
        }
    }

    /// Whether an attempt may be made now: `Err(wait)` says how long until one may.
    pub fn check(&mut self, now: Timestamp) -> Result<(), chrono::Duration> {
        self.refill(now);
        if self.left > 0 {
            Ok(())
        } else {
            Err(self.as_of + self.refill_every - now)
        }
    }

    /// Takes one attempt after a failed lookup (never below empty).
    pub fn spend(&mut self, now: Timestamp) {
        self.refill(now);
        if self.left == self.capacity {
            self.as_of = now;
        }
        self.left = self.left.saturating_sub(1);
    }

    /// Whether the bucket is full at `now`, so that forgetting it changes nothing.
    pub fn is_full(&mut self, now: Timestamp) -> bool {
        self.refill(now);
        self.left == self.capacity
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    /// Deterministic stand-ins for the caller's random bytes (SplitMix64).
    fn random_inputs(count: usize) -> impl Iterator<Item = [u8; 8]> {
        let mut state: u64 = 0x5EED_F10A_7111_A000;
        (0..count).map(move |_| {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            (z ^ (z >> 31)).to_be_bytes()
        })
    }

    fn codes(count: usize) -> Vec<ActivationCode> {
        random_inputs(count).map(ActivationCode::generate).collect()
    }

    fn parse(input: &str) -> Result<ActivationCode, CodeError> {
        input.parse()
    }

    #[test]
    fn codes_are_stable() {
        let cases = [
            ([0; 8], "00000-00000-00000"),
            ([0, 0, 0, 0, 0, 0, 0, 1], "00000-00000-003ZE"),
            ([1, 2, 3, 4, 5, 6, 7, 8], "04106-1050R-3GGEZ"),
            ([0xFF; 8], "ZZZZZ-ZZZZZ-ZZYMA"),
        ];
        for (random, shown) in cases {
            let code = ActivationCode::generate(random);
            assert_eq!(code.to_string(), shown);
            assert_eq!(code.canonical(), shown.replace('-', ""));
        }
    }

    #[test]
    fn generated_codes_are_well_formed_and_round_trip() {
        for code in codes(1_000) {
            let canonical = code.canonical();
            assert_eq!(canonical.len(), SYMBOLS);
            assert!(canonical.chars().all(|symbol| ALPHABET.contains(symbol)));

            let shown = code.to_string();
            assert_eq!(shown.len(), 17);
            assert_eq!(
                shown
                    .char_indices()
                    .filter(|&(_, c)| c == '-')
                    .map(|(i, _)| i)
                    .collect::<Vec<_>>(),
                [5, 11]
            );
            assert_eq!(shown.replace('-', ""), canonical);

            assert_eq!(parse(&shown), Ok(code.clone()));
            assert_eq!(parse(canonical), Ok(code.clone()));
        }
    }

    #[test]
    fn reading_forgives_case_spaces_and_dashes() {
        for code in codes(200) {
            let shown = code.to_string();
            let canonical = code.canonical();
            let spaced: String = canonical.chars().flat_map(|symbol| [symbol, ' ']).collect();
            let dashed: String = canonical.chars().flat_map(|symbol| ['-', symbol]).collect();
            let typed = [
                shown.to_lowercase(),
                canonical.to_lowercase(),
                shown.replace('-', " "),
                format!("  {}\t{}\n", &canonical[..7], &canonical[7..]),
                spaced,
                dashed,
                format!("{}--{}", &shown[..8].to_lowercase(), &shown[8..]),
            ];
            for input in typed {
                assert_eq!(parse(&input), Ok(code.clone()), "{input:?}");
            }
        }
    }

    #[test]
    fn reading_maps_look_alikes_to_symbols() {
        assert_eq!(
            parse("OOOOO-ooooo-0O0o0"),
            Ok(ActivationCode::generate([0; 8]))
        );

        let mut seen = 0;
        for code in codes(200) {
            let shown = code.to_string();
            if !shown.contains(['0', '1']) {
                continue;
            }
            seen += 1;
            for (zero, one) in [("O", "I"), ("o", "l"), ("O", "L"), ("o", "i")] {
                let typed = shown.replace('0', zero).replace('1', one);
                assert_eq!(parse(&typed), Ok(code.clone()), "{typed:?}");
            }
        }
        assert!(seen > 100);
    }

    #[test]
    fn wrong_lengths_are_refused() {
        let shown = ActivationCode::generate([1, 2, 3, 4, 5, 6, 7, 8]).to_string();
        for (input, symbols) in [
            ("", 0),
            (" - -", 0),
            (&shown[..16], 14),
            (&format!("{shown}0"), 16),
            (&format!("{shown}-{shown}"), 30),
        ] {
            let error = parse(input).unwrap_err();
            assert_eq!(error, CodeError::InvalidLength { symbols }, "{input:?}");
            assert_eq!(error.code(), "invalid_code_length");
        }
        assert_eq!(
            CodeError::InvalidLength { symbols: 14 }.to_string(),
            "an activation code has 15 characters, not 14 (dashes and spaces aside)"
        );
    }

    #[test]
    fn characters_outside_the_alphabet_are_refused() {
        for (input, character) in [
            ("04106-1050R-3GGEU", 'U'),
            ("u4106-1050R-3GGEZ", 'u'),
            ("04106_1050R_3GGEZ", '_'),
            ("04106.1050R.3GGEZ", '.'),
            ("04106-1050R-3GGÉZ", 'É'),
            ("04106–1050R–3GGEZ", '–'),
            // A character that cannot be a symbol is reported before a wrong length.
            ("04106-1050R-*", '*'),
        ] {
            let error = parse(input).unwrap_err();
            assert_eq!(error, CodeError::InvalidCharacter(character), "{input:?}");
            assert_eq!(error.code(), "invalid_code_character");
        }
        assert_eq!(
            CodeError::InvalidCharacter('U').to_string(),
            "'U' cannot appear in an activation code"
        );
    }

    #[test]
    fn mismatched_check_bits_are_a_typo() {
        for input in [
            "04106-1050R-3GGEY",
            "14106-1050R-3GGEZ",
            "00000-00000-00001",
        ] {
            let error = parse(input).unwrap_err();
            assert_eq!(error, CodeError::Typo, "{input:?}");
            assert_eq!(error.code(), "code_typo");
        }
        assert_eq!(
            CodeError::Typo.to_string(),
            "the activation code has a typo: check it and type it again"
        );
    }

    #[test]
    fn every_substitution_and_transposition_is_a_typo() {
        for code in codes(300) {
            let symbols: Vec<char> = code.canonical().chars().collect();
            let typo = |typed: &[char]| {
                let typed: String = typed.iter().collect();
                assert_eq!(
                    parse(&typed),
                    Err(CodeError::Typo),
                    "{code} typed as {typed}"
                );
            };

            for position in 0..SYMBOLS {
                for other in ALPHABET.chars().filter(|&other| other != symbols[position]) {
                    let mut typed = symbols.clone();
                    typed[position] = other;
                    typo(&typed);
                }
            }
            for distance in [1, 2] {
                for position in 0..SYMBOLS - distance {
                    if symbols[position] != symbols[position + distance] {
                        let mut typed = symbols.clone();
                        typed.swap(position, position + distance);
                        typo(&typed);
                    }
                }
            }
        }
    }

    #[test]
    fn different_random_inputs_give_different_codes() {
        let base = [0x5A; 8];
        let base_code = ActivationCode::generate(base);
        for bit in 0..64 {
            let mut flipped = base;
            flipped[bit / 8] ^= 1 << (bit % 8);
            assert_ne!(ActivationCode::generate(flipped), base_code, "bit {bit}");
        }

        let inputs: HashSet<[u8; 8]> = random_inputs(10_000).collect();
        let canonicals: HashSet<String> = inputs
            .iter()
            .map(|&random| ActivationCode::generate(random).canonical().to_owned())
            .collect();
        assert_eq!(canonicals.len(), inputs.len());
    }

    fn at(seconds: i64) -> Timestamp {
        chrono::DateTime::from_timestamp(1_800_000_000 + seconds, 0).unwrap()
    }

    #[test]
    fn a_term_ends_the_same_day_months_later_or_on_the_last_day_of_a_shorter_month() {
        let start: Timestamp = "2026-01-31T10:00:00Z".parse().unwrap();
        assert_eq!(
            term_end(start, 1),
            Some("2026-02-28T10:00:00Z".parse().unwrap())
        );
        assert_eq!(
            term_end(start, 12),
            Some("2027-01-31T10:00:00Z".parse().unwrap())
        );
    }

    #[test]
    fn the_budget_allows_its_capacity_then_says_when_the_next_attempt_may_come() {
        let refill = chrono::Duration::seconds(6);
        let mut budget = AttemptBudget::new(3, refill, at(0));
        for second in 0..3 {
            assert_eq!(budget.check(at(second)), Ok(()));
            budget.spend(at(second));
        }
        // The first spend started the refill clock at 0: one attempt back at 6 s.
        assert_eq!(budget.check(at(3)), Err(chrono::Duration::seconds(3)));
        assert_eq!(budget.check(at(6)), Ok(()));
        budget.spend(at(6));
        assert_eq!(budget.check(at(7)), Err(chrono::Duration::seconds(5)));
        assert!(!budget.is_full(at(20)));
        assert!(budget.is_full(at(24)));
        assert_eq!(budget.check(at(24)), Ok(()));
    }

    #[test]
    fn a_long_pause_refills_the_budget_to_its_capacity_only() {
        let mut budget = AttemptBudget::new(2, chrono::Duration::seconds(1), at(0));
        budget.spend(at(0));
        budget.spend(at(0));
        assert!(budget.check(at(0)).is_err());
        assert!(budget.is_full(at(1_000_000)));
        budget.spend(at(1_000_000));
        budget.spend(at(1_000_000));
        assert_eq!(
            budget.check(at(1_000_000)),
            Err(chrono::Duration::seconds(1))
        );
    }
}
