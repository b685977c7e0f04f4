//! The state topics, as the state sync names and tells them apart.

use dho_routing_core::state::StateKind;

/// A state topic: what the router knows about patients, and its own records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(in crate::pipeline) enum StateTopic {
    Consents,
    Subscriptions,
    CarePlans,
    /// The router's own alert tracks (written by the router, read back on assignment).
    AlertState,
}

impl StateTopic {
    pub(super) const ALL: [StateTopic; 4] = [
        StateTopic::Consents,
        StateTopic::Subscriptions,
        StateTopic::CarePlans,
        StateTopic::AlertState,
    ];

    /// The kind of record a hold names; the router's own alert tracks put no one on hold.
    pub(super) fn kind(self) -> Option<StateKind> {
        match self {
            StateTopic::Consents => Some(StateKind::Consent),
            StateTopic::Subscriptions => Some(StateKind::Subscription),
            StateTopic::CarePlans => Some(StateKind::CarePlan),
            StateTopic::AlertState => None,
        }
    }

    pub(super) fn from_label(label: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.label() == label)
    }

    pub(super) fn label(self) -> &'static str {
        match self {
            StateTopic::Consents => "consents",
            StateTopic::Subscriptions => "subscriptions",
            StateTopic::CarePlans => "careplans",
            StateTopic::AlertState => "alertstate",
        }
    }
}
