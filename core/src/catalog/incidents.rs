//! Incident reports in the catalog: their keys beside the backup, listing and reading them.

use crate::catalog::Catalog;
use crate::error::Error;
use crate::model::incident::{IncidentReport, INCIDENT_FORMAT};

impl Catalog {
    /// The key of a backup's incident report, `ext` being `json` or `md`.
    pub fn incident_key(&self, application: &str, backup_id: &str, ext: &str) -> String {
        format!("{}/incident.{ext}", self.backup_dir(application, backup_id))
    }

    /// Every incident report (of one application, when given), newest first.
    pub async fn incidents(&self, application: Option<&str>) -> Result<Vec<IncidentReport>, Error> {
        let mut reports = self
            .objects_named(application, "incident.json")
            .await?
            .into_iter()
            .map(|(key, body)| self.parse_incident(&key, &body))
            .collect::<Result<Vec<_>, _>>()?;
        reports.sort_by_key(|r| std::cmp::Reverse(r.written_at));
        Ok(reports)
    }

    /// The report of one backup (found in any application); `IncidentNotFound` when its
    /// deploy did not fail.
    pub async fn incident(&self, backup_id: &str) -> Result<IncidentReport, Error> {
        let manifest = self.find(backup_id).await?;
        let key = self.incident_key(&manifest.application, backup_id, "json");
        let body = self
            .store
            .get_bytes(&key)
            .await?
            .ok_or_else(|| Error::IncidentNotFound {
                backup_id: backup_id.to_string(),
            })?;
        self.parse_incident(&key, &body)
    }

    fn parse_incident(&self, key: &str, body: &[u8]) -> Result<IncidentReport, Error> {
        let malformed = |reason: String| Error::ManifestMalformed {
            bucket: self.store.bucket().to_string(),
            key: key.to_string(),
            reason,
        };
        let report: IncidentReport =
            serde_json::from_slice(body).map_err(|e| malformed(e.to_string()))?;
        if report.format_version != INCIDENT_FORMAT {
            return Err(malformed(format!(
                "unsupported format_version {}",
                report.format_version
            )));
        }
        Ok(report)
    }
}
