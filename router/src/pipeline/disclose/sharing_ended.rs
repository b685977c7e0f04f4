//! The "sharing ended" notice: a delivery without clinical content to a subscriber whose
//! deliveries a consent change ended (`pipeline::sharing` decides who), with its
//! disclosure record, so the patient can see that the organisation was told.

use dho_schemas::codec::{DeliveryView, DisclosureView};
use dho_schemas::model::*;
use dho_schemas::partition::partition_for;

use super::super::error::{Result, hand_over};
use super::super::ids::delivery_id_into;
use super::Disclosure;
use crate::outputs::{Outbox, Outputs};

/// One notice: to whom, and the consent record that ended the sharing.
#[derive(Debug, Clone, Copy)]
pub(in crate::pipeline) struct Notice<'a> {
    pub(in crate::pipeline) patient: &'a PatientIdentifier,
    /// The subscription that was granted before the change.
    pub(in crate::pipeline) subscription: &'a Subscription,
    /// The consent record that changed, and its position on the consents topic (the
    /// notice's source: a notice sent again has the same delivery id).
    pub(in crate::pipeline) consent_id: &'a str,
    pub(in crate::pipeline) source: &'a SourcePosition,
    /// The consent's legal rule (the withdrawn one's, for a deleted record).
    pub(in crate::pipeline) legal_basis: &'a str,
    /// Who recorded it, for the audit record (the withdrawn one's recorder, for a deleted
    /// record).
    pub(in crate::pipeline) controller: &'a OrganisationIdentifier,
    pub(in crate::pipeline) ended: &'a SharingEnded,
}

impl Disclosure {
    /// Produces the notice and its disclosure record.
    pub(in crate::pipeline) async fn sharing_ended(
        &mut self,
        notice: Notice<'_>,
        outputs: &mut Outputs,
        now: Millis,
        outbox: &mut Outbox,
    ) -> Result<()> {
        let subscription = notice.subscription;
        let subscriber = subscription.subscriber_id.as_str();
        if !self.deliver.contains_key(subscriber) {
            self.deliver_encoder(subscriber, outputs).await?;
        }
        let Some(&(ref encoder, topic)) = self.deliver.get(subscriber) else {
            return Ok(());
        };
        let mut id = [0; 36];
        let delivery_id = delivery_id_into(notice.source, subscriber, &mut id);
        let delivery = DeliveryView {
            delivery_id,
            subscriber_id: subscriber,
            subscription_id: &subscription.subscription_id,
            consent_id: notice.consent_id,
            patient: notice.patient,
            source: notice.source,
            content_level: subscription.content_level,
            routed_at: now,
            measurement: None,
            self_report: None,
            alert: None,
            reference: None,
            replaces: None,
            professional_denies: &[],
            sharing_ended: Some(notice.ended),
        };
        let key = notice.patient.key().as_bytes();
        let partition = partition_for(key, self.settings.partitions);
        outbox.push_with(topic, partition, key, |out| {
            encoder.append_view(&delivery, out)
        })?;
        // The audit record names what the notice is about: the first category it ends and
        // the consent record, as the event.
        let category = notice
            .ended
            .categories
            .first()
            .copied()
            .unwrap_or(DataCategory::Measurement);
        let record = DisclosureView {
            delivery_id,
            recorded_at: now,
            patient: notice.patient,
            recipient: &subscription.subscriber_org,
            subscriber_id: subscriber,
            subscription_id: &subscription.subscription_id,
            purpose_of_use: &subscription.purpose_of_use,
            decision_reference: notice.consent_id,
            legal_basis: notice.legal_basis,
            data_controller: notice.controller,
            category,
            event_id: notice.consent_id,
            content_level: subscription.content_level,
            source: notice.source,
            replaces: None,
        };
        outbox.push_with(self.audit_topic, partition, key, |out| {
            self.audit.append_view(&record, out)
        })?;
        hand_over(outputs, outbox).await
    }
}
