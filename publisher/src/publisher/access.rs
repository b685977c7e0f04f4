//! Who may change what: enrolments (the organisations responsible for a patient's
//! follow-up, recorded by an operator) and the audit of refused requests.

use dho_schemas::{
    AccessRefusal, Enrolment, EnrolmentAction, EnrolmentChange, OrganisationIdentifier,
    PatientIdentifier, model::now_millis, topics::state_key,
};

use super::{ConsentAudit, Publisher, Receipt, Result};

impl Publisher {
    /// Records that `enrolment.organisation` is responsible for the patient's follow-up,
    /// audit record first (`<prefix>.audit.enrolments`).
    pub async fn record_enrolment(
        &self,
        enrolment: &Enrolment,
        audit: ConsentAudit<'_>,
    ) -> Result<Receipt> {
        dho_schemas::validate::patient("patient", &enrolment.patient, self.policy)?;
        dho_schemas::validate::organisation("organisation", &enrolment.organisation)?;
        let patient = &enrolment.patient;
        self.audit_enrolment(
            patient,
            &enrolment.organisation,
            EnrolmentAction::Enrolled,
            Some(enrolment.clone()),
            audit,
        )
        .await?;
        let key = state_key(patient, &Enrolment::record_id(&enrolment.organisation));
        let topic = self.topics.enrolments();
        self.send(&topic, patient, &key, &self.enrolments, Some(enrolment))
            .await
    }

    /// Ends an organisation's responsibility for the patient (a tombstone), audit first.
    pub async fn end_enrolment(
        &self,
        patient: &PatientIdentifier,
        organisation: &OrganisationIdentifier,
        audit: ConsentAudit<'_>,
    ) -> Result<Receipt> {
        dho_schemas::validate::patient("patient", patient, self.policy)?;
        self.audit_enrolment(patient, organisation, EnrolmentAction::Ended, None, audit)
            .await?;
        let key = state_key(patient, &Enrolment::record_id(organisation));
        let topic = self.topics.enrolments();
        self.send::<Enrolment>(&topic, patient, &key, &self.enrolments, None)
            .await
    }

    async fn audit_enrolment(
        &self,
        patient: &PatientIdentifier,
        organisation: &OrganisationIdentifier,
        action: EnrolmentAction,
        enrolment: Option<Enrolment>,
        audit: ConsentAudit<'_>,
    ) -> Result<Receipt> {
        let change = EnrolmentChange {
            change_id: uuid::Uuid::new_v4().to_string(),
            patient: patient.clone(),
            organisation: organisation.clone(),
            action,
            enrolment,
            principal: audit.principal.to_string(),
            channel: audit.channel.to_string(),
            changed_at: now_millis(),
        };
        let topic = self.topics.enrolment_audit();
        self.send(
            &topic,
            patient,
            patient.key(),
            &self.enrolment_changes,
            Some(&change),
        )
        .await
    }

    /// Audits a refused request (`<prefix>.audit.refusals`): keyed and partitioned by the
    /// patient when known, else by the credential's name.
    pub async fn audit_refusal(&self, refusal: &AccessRefusal) -> Result<Receipt> {
        let topic = self.topics.refusal_audit();
        let payload = self.refusals.encode(refusal)?;
        let key = match &refusal.patient {
            Some(patient) => patient.key().to_string(),
            None => refusal.principal.clone(),
        };
        self.send_keyed(&topic, &key, Some(payload)).await
    }
}
