"""OpenAI's Python client against `visualrwkv serve`: an image question (plain and streamed), a
text completion and the model list, each checked against OpenAI's wire objects; prints one JSON
line with what came back. Run through scripts/openai-client-test.sh (which makes the venv).

    python openai-client-test.py URL IMAGE [QUESTION]
"""

import base64
import json
import mimetypes
import sys

from openai import OpenAI


def main() -> None:
    if len(sys.argv) not in (3, 4):
        sys.exit("usage: openai-client-test.py URL IMAGE [QUESTION]")
    url, image = sys.argv[1], sys.argv[2]
    question = sys.argv[3] if len(sys.argv) == 4 else "Describe it."
    client = OpenAI(base_url=url.rstrip("/") + "/v1", api_key="not-needed", max_retries=0, timeout=300)
    mime = mimetypes.guess_type(image)[0] or "image/png"
    with open(image, "rb") as f:
        data = f"data:{mime};base64,{base64.b64encode(f.read()).decode()}"
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": data}},
                {"type": "text", "text": question},
            ],
        }
    ]

    plain = client.chat.completions.create(model="visualrwkv", messages=messages, max_tokens=8, temperature=0)
    assert plain.object == "chat.completion", plain.object
    choice = plain.choices[0]
    assert choice.message.role == "assistant", choice.message.role
    assert choice.finish_reason in ("stop", "length"), choice.finish_reason
    usage = plain.usage
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens, usage
    answer = choice.message.content

    stream = client.chat.completions.create(
        model="visualrwkv",
        messages=messages,
        max_tokens=8,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    parts, finish, stream_usage, chunks = [], None, None, 0
    for chunk in stream:
        chunks += 1
        assert chunk.object == "chat.completion.chunk", chunk.object
        if chunk.choices:
            delta = chunk.choices[0].delta
            if delta.content:
                parts.append(delta.content)
            if chunk.choices[0].finish_reason:
                finish = chunk.choices[0].finish_reason
        if chunk.usage:
            stream_usage = chunk.usage
    streamed = "".join(parts)
    assert streamed == answer, (streamed, answer)
    assert finish == choice.finish_reason, (finish, choice.finish_reason)
    assert stream_usage is not None and stream_usage.completion_tokens == usage.completion_tokens

    text = client.completions.create(model="visualrwkv", prompt="Once upon", max_tokens=4, temperature=0)
    assert text.object == "text_completion", text.object
    models = [m.id for m in client.models.list().data]
    assert models, "no models listed"

    print(
        json.dumps(
            {
                "answer": answer,
                "streamed": streamed,
                "chunks": chunks,
                "finish_reason": finish,
                "completion_tokens": usage.completion_tokens,
                "completion": text.choices[0].text,
                "models": models,
            }
        )
    )


if __name__ == "__main__":
    main()
