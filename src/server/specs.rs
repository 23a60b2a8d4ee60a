//! What each job runs, built from the settings file: the typed operation
//! and its description (what the job record shows).

use super::jobs::{JobSpec, Operation, Trigger, SCHEDULED_LOCK_WAIT};
use crate::copy::CopySettings;
use crate::drill::DrillSettings;
use crate::settings::SourceSettings;

/// A backup of a configured source, then its retention (forget, prune).
pub fn backup(name: &str, source: &SourceSettings, trigger: Trigger) -> JobSpec {
    let mut description = format!("backup of source {name:?}");
    if let Some(r) = &source.retention {
        description.push_str(if r.prune {
            ", then its retention and prune"
        } else {
            ", then its retention"
        });
    }
    JobSpec {
        repository: source.repository.clone(),
        source: Some(name.to_string()),
        trigger,
        operation: Operation::Backup {
            source: name.to_string(),
            lock_wait: SCHEDULED_LOCK_WAIT,
        },
        description,
    }
}

/// A job on a whole repository, started through the API.
pub fn repository_job(repository: &str, operation: Operation, description: String) -> JobSpec {
    JobSpec {
        repository: repository.to_string(),
        source: None,
        trigger: Trigger::Api,
        operation,
        description,
    }
}

/// A restore drill, on its source's repository.
pub fn drill(name: &str, drill: &DrillSettings, repository: &str, trigger: Trigger) -> JobSpec {
    JobSpec {
        repository: repository.to_string(),
        source: Some(drill.source.clone()),
        trigger,
        operation: Operation::Drill {
            drill: name.to_string(),
        },
        description: format!(
            "drill {name:?}: recovery of the latest backup of source {:?}",
            drill.source
        ),
    }
}

/// A copy between two repositories of the settings file; the job belongs
/// to the repository written.
pub fn copy(name: &str, copy: &CopySettings, trigger: Trigger) -> JobSpec {
    JobSpec {
        repository: copy.to.clone(),
        source: None,
        trigger,
        operation: Operation::Copy {
            copy: name.to_string(),
        },
        description: format!(
            "copy {name:?}: snapshots of repository {:?} missing from {:?}",
            copy.from, copy.to
        ),
    }
}
