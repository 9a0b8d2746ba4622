//! Every runtime's registry of the AWS services' connectors, built from the settings: `updraft run`
//! (beside its local or cluster connector) and the deployed functions build theirs here, so a service
//! added here runs everywhere at once.

use std::sync::Arc;

use updraft_connector::Registry;
use updraft_settings::Settings;

/// `registry` with the connectors of the AWS services (AWS Batch; SageMaker jobs, Pythonic jobs, legacy
/// jobs and endpoints; boto calls; Athena queries; EMR Serverless job runs) and of Qubole's Hive
/// commands added, configured by `settings` (`hive.engine` picks which one runs `hive` tasks) and
/// calling AWS with `sdk`'s configuration.
pub fn with_services(
    registry: Registry,
    settings: &Settings,
    sdk: &aws_config::SdkConfig,
) -> Registry {
    let mut registry = registry.with(Arc::new(updraft_connector_batch::BatchConnector::new(
        sdk, settings,
    )));
    for c in updraft_connector_sagemaker::connectors(sdk, settings) {
        registry = registry.with(c);
    }
    let athena = updraft_connector_athena::AthenaConnector::new(sdk, settings);
    let emr = updraft_connector_emr::EmrServerlessConnector::new(sdk, settings);
    let qubole = updraft_connector_qubole::QuboleConnector::new(sdk, settings);
    registry
        .with(Arc::new(athena))
        .with(Arc::new(emr))
        .with(Arc::new(qubole))
}

/// The job a service's state-change event (an EventBridge event's JSON) is about, as the connector that
/// made it names it (what its `watch` gave). Pure: it needs no client, so the events function routes
/// events without linking the services' SDKs.
pub fn job_of(event: &serde_json::Value) -> Option<updraft_connector::JobKey> {
    updraft_connector_batch::job_of_event(event)
        .or_else(|| updraft_connector_sagemaker::job_of_event(event))
        .or_else(|| updraft_connector_athena::job_of_event(event))
        .or_else(|| updraft_connector_emr::job_of_event(event))
}

/// The SDK configuration `settings` describe: its `aws.region` and `aws.endpoint` over the SDK's own
/// (environment, profile, `AWS_ENDPOINT_URL`).
pub async fn sdk_config(settings: &Settings) -> aws_config::SdkConfig {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
    if let Some(r) = &settings.aws.region {
        loader = loader.region(aws_config::Region::new(r.clone()));
    }
    if let Some(e) = &settings.aws.endpoint {
        loader = loader.endpoint_url(e);
    }
    loader.load().await
}
