//! Cluster settings: namespaces, service accounts, interruptible capacity, pod templates, cleanup.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{PodTemplateSpec, Toleration};
use serde::Deserialize;

/// Where interruptible (spot) attempts go.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Interruptible {
    /// Node labels interruptible pods require.
    #[serde(default)]
    pub node_selector: BTreeMap<String, String>,
    /// Taints interruptible pods tolerate.
    #[serde(default)]
    pub tolerations: Vec<Toleration>,
}

/// How native tasks are placed on the cluster.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct EksConfig {
    /// The namespace of an execution's objects; `{{project}}` and `{{domain}}` are replaced.
    pub namespace: String,
    /// Project and domain of executions (Flyte's; `{{project}}`, `{{domain}}` in [`Self::namespace`]).
    pub project: String,
    /// See [`Self::project`].
    pub domain: String,
    /// The service account of pods whose task names none.
    pub service_account: Option<String>,
    /// Placement of interruptible attempts.
    pub interruptible: Interruptible,
    /// Pod templates by name, for tasks with a `pod_template_name` (what the cluster's PodTemplate
    /// objects of that name hold). A container named `primary` in a template applies to the primary
    /// container, one named `default` to every container.
    pub pod_templates: BTreeMap<String, PodTemplateSpec>,
    /// Labels added to every object.
    pub labels: BTreeMap<String, String>,
    /// Annotations added to every object.
    pub annotations: BTreeMap<String, String>,
    /// Environment variables of every container (Flyte's `default-env-vars`), where the task sets none of
    /// the same name: e.g. `FLYTE_AWS_ENDPOINT` for flytekit and `AWS_ENDPOINT_URL` for the copilot when
    /// data lives in an S3-compatible store.
    pub env: BTreeMap<String, String>,
    /// Delete an attempt's objects when it finishes (they are always deleted on abort).
    pub delete_on_finish: bool,
    /// The `sparkVersion` of Spark applications.
    pub spark_version: String,
    /// The image holding `updraft-copilot`, which moves raw containers' data (used only by them; built
    /// from `copilot/Dockerfile`).
    pub copilot_image: String,
    /// How long a pod may wait for an image that does not pull before the attempt fails (retryable).
    pub image_pull_grace_seconds: u64,
    /// The EKS cluster to reach with the AWS identity (the Lambda functions' way), when no kubeconfig
    /// is given.
    pub cluster: Option<crate::auth::EksCluster>,
    /// Python tasks' pods run under a small wrapper (`python3 -c`, see `wrap`), and raw containers'
    /// copilot does the same: each tells the runtime when the task ends (where the runtime listens: the
    /// serverless stack) and takes small inputs from the pod's environment instead of the bucket. Off:
    /// pods run their command as it is, their inputs in the bucket, their ends seen by polling.
    pub task_wrapper: bool,
    /// Inputs up to this many bytes (encoded) travel in the pod's environment instead of the bucket.
    pub inline_inputs_max: usize,
}

impl Default for EksConfig {
    fn default() -> Self {
        Self {
            namespace: "{{project}}-{{domain}}".into(),
            project: "updraft".into(),
            domain: "development".into(),
            service_account: None,
            interruptible: Interruptible::default(),
            pod_templates: BTreeMap::new(),
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
            env: BTreeMap::new(),
            delete_on_finish: true,
            spark_version: "3.5.0".into(),
            copilot_image: concat!(
                "ghcr.io/updraft-run/updraft-copilot:",
                env!("CARGO_PKG_VERSION")
            )
            .into(),
            image_pull_grace_seconds: crate::status::IMAGE_PULL_GRACE.as_secs(),
            cluster: None,
            task_wrapper: true,
            inline_inputs_max: crate::wrap::INLINE_INPUTS_MAX,
        }
    }
}

impl EksConfig {
    /// The namespace objects go in.
    pub fn namespace(&self) -> String {
        self.namespace
            .replace("{{project}}", &self.project)
            .replace("{{domain}}", &self.domain)
    }
}

impl EksConfig {
    /// The cluster settings of a settings file's `eks` section; an unknown key is an error naming it
    /// (`eks.podTemplate: unknown field …`).
    pub fn from_settings(
        origin: &str,
        section: &serde_json::Value,
    ) -> Result<Self, updraft_settings::SettingsError> {
        updraft_settings::from_value(origin, "eks", section.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every key the settings' JSON Schema lists under `eks` reads, and an unknown one is named.
    #[test]
    fn schema_keys_read() {
        let schema: serde_json::Value = serde_json::from_str(include_str!(
            "../../../settings/updraft-settings.schema.json"
        ))
        .unwrap();
        let eks = &schema["properties"]["eks"]["properties"];
        let example = serde_json::json!({
            "namespace": "ml", "project": "p", "domain": "d", "serviceAccount": "sa",
            "interruptible": {"nodeSelector": {"a": "b"}, "tolerations": []},
            "podTemplates": {}, "labels": {}, "annotations": {}, "env": {"A": "1"},
            "deleteOnFinish": false, "sparkVersion": "3.5.0", "copilotImage": "c",
            "imagePullGraceSeconds": 5,
            "cluster": {"name": "c", "region": "r", "endpoint": "e", "certificateAuthorityData": "x"}
        });
        let mut keys: Vec<&String> = eks.as_object().unwrap().keys().collect();
        let mut given: Vec<&String> = example.as_object().unwrap().keys().collect();
        keys.sort();
        given.sort();
        assert_eq!(keys, given);
        let c = EksConfig::from_settings("s.yaml", &example).unwrap();
        assert_eq!(c.namespace(), "ml");
        assert!(!c.delete_on_finish);
        let e = EksConfig::from_settings("s.yaml", &serde_json::json!({"podTemplate": {}}))
            .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("s.yaml: eks.podTemplate: unknown field `podTemplate`"),
            "{e}"
        );
    }
}
