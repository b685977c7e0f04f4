//! The one form in which a patient may reach a log line, a trace or an event.

use std::fmt;

use dho_schemas::model::PatientIdentifier;

/// A patient as logs and events name them: the short keyed pseudonym of the identifier
/// (`dho_schemas::ids::pseudonym`, the same tag the admin CLI prints), never the number.
///
/// The only constructor takes a [`PatientIdentifier`] and keeps nothing but the pseudonym,
/// so an event with a `Pseudonym` field cannot be handed a raw identifier string:
///
/// ```compile_fail
/// let patient: dho_telemetry::Pseudonym = "01010101006".into();
/// ```
///
/// ```compile_fail
/// let patient = dho_telemetry::Pseudonym::from(String::from("01010101006"));
/// ```
///
/// ```
/// use dho_schemas::model::PatientIdentifier;
/// let patient = dho_telemetry::Pseudonym::from(&PatientIdentifier::fnr("01010101006"));
/// assert!(!patient.to_string().contains("01010101006"));
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Pseudonym(String);

impl From<&PatientIdentifier> for Pseudonym {
    fn from(patient: &PatientIdentifier) -> Self {
        Self(dho_schemas::ids::pseudonym(&patient.value))
    }
}

impl fmt::Display for Pseudonym {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Pseudonym {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pseudonym({})", self.0)
    }
}

/// Checked on every build (not only by tests): `Pseudonym` is made from no string. If any
/// of these conversions were implemented, `some_item` below would be ambiguous and the
/// crate would not compile (the `static_assertions::assert_not_impl_any` technique).
mod made_from_no_string {
    use super::Pseudonym;

    trait AmbiguousIfImplemented<A> {
        fn some_item() {}
    }
    impl<T: ?Sized> AmbiguousIfImplemented<()> for T {}

    macro_rules! not_implemented {
        ($($marker:ident: $bound:path;)+) => {
            $(
                #[allow(dead_code)]
                struct $marker;
                impl<T: ?Sized + $bound> AmbiguousIfImplemented<$marker> for T {}
            )+
        };
    }
    not_implemented! {
        FromStr: std::str::FromStr;
        FromStaticStr: From<&'static str>;
        FromString: From<String>;
        FromBoxStr: From<Box<str>>;
    }

    const _: fn() = || {
        let _ = <Pseudonym as AmbiguousIfImplemented<_>>::some_item;
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shows_a_stable_tag_and_never_the_number() {
        let number = "01010101006";
        let patient = PatientIdentifier::fnr(number);
        let pseudonym = Pseudonym::from(&patient);
        assert_eq!(pseudonym, Pseudonym::from(&patient));
        assert_eq!(pseudonym.to_string(), patient.log_tag());
        assert!(pseudonym.to_string().starts_with("p-"));
        for shown in [pseudonym.to_string(), format!("{pseudonym:?}")] {
            assert!(!shown.contains(number), "{shown}");
        }
    }
}
