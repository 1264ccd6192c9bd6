//! SIRET numbers (French establishment identifiers): 14 digits passing the Luhn
//! check, except La Poste's (SIREN 356000000), whose digit sum is a multiple of 5.
use crate::error::{ApiResult, AppError};

const LA_POSTE_SIREN: &str = "356000000";

/// True when `siret` is a valid SIRET (exactly 14 ASCII digits, no spaces).
pub fn is_valid(siret: &str) -> bool {
    if siret.len() != 14 || !siret.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    let digits = siret.bytes().map(|b| u32::from(b - b'0'));
    if siret.starts_with(LA_POSTE_SIREN) {
        return digits.sum::<u32>().is_multiple_of(5);
    }
    let sum: u32 = digits
        .rev()
        .enumerate()
        .map(|(i, d)| {
            if i % 2 == 1 {
                if d * 2 > 9 { d * 2 - 9 } else { d * 2 }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// An organization (name + SIRET) as given by a caller, checked and trimmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Organization {
    pub name: String,
    pub siret: String,
}

/// Validate an optional organization: name and SIRET go together (a SIRET
/// requires a name and vice versa); spaces inside the SIRET are forgiven.
pub fn validate_organization(
    name: Option<&str>,
    siret: Option<&str>,
) -> ApiResult<Option<Organization>> {
    let name = name.map(str::trim).filter(|n| !n.is_empty());
    let siret = siret
        .map(|s| s.chars().filter(|c| !c.is_whitespace()).collect::<String>())
        .filter(|s| !s.is_empty());
    match (name, siret) {
        (None, None) => Ok(None),
        (Some(_), None) => Err(AppError::validation(
            "organization.siret",
            "an organization name requires a SIRET",
        )),
        (None, Some(_)) => Err(AppError::validation(
            "organization.name",
            "a SIRET requires an organization name",
        )),
        (Some(name), Some(siret)) => {
            if name.chars().count() > 200 {
                return Err(AppError::validation(
                    "organization.name",
                    "organization name is longer than 200 characters",
                ));
            }
            if !is_valid(&siret) {
                return Err(AppError::validation(
                    "organization.siret",
                    "SIRET must be 14 digits passing the Luhn check",
                ));
            }
            Ok(Some(Organization {
                name: name.to_owned(),
                siret,
            }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn siret_table() {
        let cases = [
            ("73282932000074", true),  // Apple France
            ("44306184100047", true),  // Google France
            ("73282932000075", false), // last digit changed
            ("35600000049837", true),  // La Poste: Luhn fails, digit sum 45
            ("35600000000048", false), // La Poste: Luhn passes, but digit sum 26
            ("35600000000049", false), // La Poste: neither
            ("7328293200007", false),  // 13 digits
            ("732829320000744", false),
            ("7328293200007A", false),
            ("", false),
            ("00000000000000", true), // Luhn sum 0: valid by the rule
        ];
        for (siret, valid) in cases {
            assert_eq!(is_valid(siret), valid, "{siret}");
        }
    }

    #[test]
    fn name_and_siret_go_together() {
        assert_eq!(validate_organization(None, None).unwrap(), None);
        assert_eq!(validate_organization(Some("  "), Some("")).unwrap(), None);
        let err = validate_organization(Some("Acme"), None).unwrap_err();
        assert!(matches!(
            err,
            AppError::Validation {
                field: "organization.siret",
                ..
            }
        ));
        let err = validate_organization(None, Some("73282932000074")).unwrap_err();
        assert!(matches!(
            err,
            AppError::Validation {
                field: "organization.name",
                ..
            }
        ));
        let org = validate_organization(Some(" Acme "), Some("732 829 320 00074"))
            .unwrap()
            .unwrap();
        assert_eq!(
            org,
            Organization {
                name: "Acme".into(),
                siret: "73282932000074".into()
            }
        );
    }
}
