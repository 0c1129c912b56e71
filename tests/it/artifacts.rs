//! Artifacts: images answered as `b64_json` (what GPT image models send) and speech audio
//! are kept in the stack's bucket under content addresses, listed with download links, and
//! never stored twice.

use std::time::Duration;

use shepherd::domain::{Act, ProductionStatus, Role};
use shepherd_it::{Fault, FaultRule, TestStack};

const SETTLE: Duration = Duration::from_secs(90);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_in_b64_json_and_speech_are_objects_in_the_bucket_and_a_rerun_stores_nothing_twice()
{
    let t = TestStack::start(&[]).await;
    // The third clip is refused once: voice fails after storing the other two.
    t.provider.add_fault(
        FaultRule::new("speech", Fault::Refusal(true))
            .key("#voice#scene-3")
            .times(1),
    );
    let p = t.start_production(3).await;
    let failed = t.wait_settled(&p.id, SETTLE).await;
    assert_eq!(failed.status, ProductionStatus::Failed, "{failed:#?}");

    // Every image request was what a GPT image model takes, and was answered in base64.
    let calls = t.provider.calls();
    let images: Vec<_> = calls
        .bodies
        .iter()
        .filter(|b| b["model"] == "gpt-image-1")
        .collect();
    assert_eq!(images.len(), 3);
    assert!(images.iter().all(|b| b.get("response_format").is_none()));

    // A new voice is a new revision: the clips are asked for again. The fake speaks the same
    // bytes for the same text, so the two clips already stored are not written again.
    let operator = TestStack::caller(Role::Operator);
    let edit = Act::Edit {
        changes: vec!["voice=onyx".parse().unwrap()],
    };
    t.ops.act(&p.id, edit, &operator).await.unwrap();
    t.ops.act(&p.id, Act::RetryPhase, &operator).await.unwrap();
    let done = t.completes(&p.id, SETTLE).await;
    assert_eq!(
        t.provider.calls().served["/v1/audio/speech"],
        5,
        "2 + 3 clips made"
    );

    let artifacts = t.ops.artifacts(&done).await.unwrap();
    let of = |phase: &str| artifacts.iter().filter(|a| a.phase == phase).count();
    assert_eq!((of("assets"), of("voice")), (3, 3), "{artifacts:#?}");
    let s3 = t.s3();
    let bucket = &t.config.topology.artifact_bucket;
    let http = reqwest::Client::new();
    for a in &artifacts {
        let obj = s3
            .get_object()
            .bucket(bucket)
            .key(&a.artifact.key)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{} is not in the bucket: {e:?}", a.artifact.key));
        assert_eq!(obj.content_type(), Some(a.artifact.content_type.as_str()));
        let bytes = obj.body.collect().await.unwrap().into_bytes();
        let again = shepherd::domain::artifacts::Artifact::of(
            &p.id,
            &a.artifact.name,
            &bytes,
            &a.artifact.content_type,
        );
        assert_eq!(
            again.key, a.artifact.key,
            "the key is the content's address"
        );
        let magic: &[u8] = if a.phase == "assets" {
            b"\x89PNG"
        } else {
            b"ID3"
        };
        assert!(bytes.starts_with(magic), "{}", a.artifact.key);
        // The link works for a plain HTTP client, for a while.
        let linked = http.get(&a.url).send().await.unwrap();
        assert_eq!(linked.status(), 200, "{}", a.url);
        assert_eq!(linked.bytes().await.unwrap(), bytes);
    }
    // The API lists them too, with links.
    let (status, body) = t
        .http(
            "GET",
            &format!("/productions/{}", p.id),
            Some("operator-acme"),
            None,
        )
        .await;
    assert_eq!(status, 200);
    let listed = body["artifacts"].as_array().unwrap();
    assert_eq!(listed.len(), 6, "{body}");
    assert!(
        listed
            .iter()
            .all(|a| a["url"].as_str().unwrap().contains("X-Amz-Signature"))
    );
    let versions = s3
        .list_object_versions()
        .bucket(bucket)
        .prefix(format!("productions/{}/", p.id))
        .send()
        .await
        .unwrap();
    assert_eq!(
        versions.versions().len(),
        6,
        "one version per content, however often it was made: {:?}",
        versions.versions()
    );

    // The bucket is as the template makes it. (moto's GetBucketVersioning answer has the
    // wrong XML root for the Rust SDK, so versioning is not read back here.)
    let block = s3
        .get_public_access_block()
        .bucket(bucket)
        .send()
        .await
        .unwrap();
    let block = block.public_access_block_configuration().unwrap();
    assert_eq!(
        (
            block.block_public_acls(),
            block.block_public_policy(),
            block.ignore_public_acls(),
            block.restrict_public_buckets()
        ),
        (Some(true), Some(true), Some(true), Some(true))
    );
    let sse = s3
        .get_bucket_encryption()
        .bucket(bucket)
        .send()
        .await
        .unwrap();
    let rule = &sse.server_side_encryption_configuration().unwrap().rules()[0];
    assert_eq!(
        rule.apply_server_side_encryption_by_default()
            .map(|d| d.sse_algorithm().as_str()),
        Some("AES256")
    );
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_output_too_large_for_an_item_is_kept_in_the_bucket_and_read_back() {
    use shepherd::ports::StoredOutput;
    let t = TestStack::start_idle().await;
    let clients = t.function_clients("assets").await;
    let ports = clients.ports(&t.config.topology, None, Duration::from_secs(5));
    let big = serde_json::json!({"text": "x".repeat(500 * 1024)});
    let key = ports
        .outputs
        .put(
            "p-large",
            "assets",
            1,
            &StoredOutput {
                body: big.clone(),
                artifacts: vec![],
            },
        )
        .await
        .expect("a 500 KB output is stored (DynamoDB items stop at 400 KB)");
    let back = ports.outputs.get("p-large", &key).await.unwrap().unwrap();
    assert_eq!(back.body, big);
    let objects = t
        .s3()
        .list_objects_v2()
        .bucket(&t.config.topology.artifact_bucket)
        .prefix("productions/p-large/")
        .send()
        .await
        .unwrap();
    assert_eq!(objects.contents().len(), 1);
    assert!(objects.contents()[0].key().unwrap().ends_with(".json"));
    t.stop().await;
}
