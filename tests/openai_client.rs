//! A real OpenAI client, not written here (the async-openai crate), drives the
//! gateway with its base URL at `/llm` and at `/v1`.

mod common;
use async_openai::config::OpenAIConfig;
use async_openai::types::{
    ChatCompletionRequestUserMessageArgs, ChatCompletionStreamOptions,
    CreateChatCompletionRequestArgs, CreateCompletionRequestArgs, CreateEmbeddingRequestArgs,
};
use async_openai::Client;
use common::mock::{use_mock, Mock};
use common::*;
use futures_util::StreamExt;

#[tokio::test]
async fn async_openai_works_against_llm_and_v1() {
    let mock = Mock::start().await;
    let s = TestServer::start_with(|cfg| use_mock(cfg, &mock, &["aiml", "openrouter"])).await;
    let (_, _, key) = s.user_with_key("sdk-user", Some("enterprise")).await;
    for base in ["/llm", "/v1"] {
        let client = Client::with_config(
            OpenAIConfig::new()
                .with_api_base(s.url(base))
                .with_api_key(&key),
        );
        let msg = ChatCompletionRequestUserMessageArgs::default()
            .content("Say hello")
            .build()
            .unwrap();

        let req = CreateChatCompletionRequestArgs::default()
            .model("aiml/m1")
            .messages([msg.clone().into()])
            .max_tokens(50u32)
            .build()
            .unwrap();
        let resp = client.chat().create(req).await.expect("chat");
        assert_eq!(resp.model, "aiml/m1");
        assert_eq!(
            resp.choices[0].message.content.as_deref(),
            Some("Hello world")
        );
        assert_eq!(resp.usage.unwrap().total_tokens, 30);

        let req = CreateChatCompletionRequestArgs::default()
            .model("aiml/m1")
            .messages([msg.into()])
            .stream(true)
            .stream_options(ChatCompletionStreamOptions {
                include_usage: true,
            })
            .build()
            .unwrap();
        let mut stream = client.chat().create_stream(req).await.expect("stream");
        let (mut text, mut usage) = (String::new(), None);
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.expect("chunk");
            assert_eq!(chunk.model, "aiml/m1");
            for c in &chunk.choices {
                text.push_str(c.delta.content.as_deref().unwrap_or(""));
            }
            if chunk.usage.is_some() {
                usage = chunk.usage;
            }
        }
        assert_eq!(text, "Hello world");
        assert_eq!(usage.expect("usage chunk").total_tokens, 30);

        let req = CreateCompletionRequestArgs::default()
            .model("aiml/c1")
            .prompt("Say hi")
            .max_tokens(20u32)
            .build()
            .unwrap();
        let resp = client.completions().create(req).await.expect("completion");
        assert_eq!(resp.choices[0].text, "Hello world");

        let req = CreateEmbeddingRequestArgs::default()
            .model("aiml/emb")
            .input(["one", "two"])
            .build()
            .unwrap();
        let resp = client.embeddings().create(req).await.expect("embeddings");
        assert_eq!(resp.data.len(), 2);
        assert_eq!(resp.data[1].embedding, vec![0.25, -0.5, 1.0]);

        let models = client.models().list().await.expect("models");
        assert!(models.data.iter().any(|m| m.id == "aiml/m1"));
        assert!(models
            .data
            .iter()
            .any(|m| m.id == "openrouter/openai/gpt-4o"));

        // an upstream refusal reaches the SDK as an API error in OpenAI's shape
        let req = CreateChatCompletionRequestArgs::default()
            .model("aiml/error:404:openrouter")
            .messages([ChatCompletionRequestUserMessageArgs::default()
                .content("x")
                .build()
                .unwrap()
                .into()])
            .build()
            .unwrap();
        match client.chat().create(req).await {
            Err(async_openai::error::OpenAIError::ApiError(e)) => {
                assert!(e.message.contains("AIML API"))
            }
            other => panic!("expected an API error, got {other:?}"),
        }
    }
}
