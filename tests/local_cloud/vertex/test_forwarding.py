"""The endpoint's hop to a serving container: kept-alive connections, a connection the container
closed, its errors passed on in its words, and a container that is gone."""

from __future__ import annotations

import asyncio
import json

import pytest

from local_cloud.vertex.forwarding import ContainerAnswer, Forwarder, with_fields
from model_server.errors import ApiError

FIELDS = b',"deployedModelId":"7"'


class Container:
    """A raw HTTP/1.1 server standing in for a container: answers each POST from ``answers``."""

    def __init__(self, answers: list[bytes]):
        self.answers = answers
        self.connections = 0
        self.bodies: list[bytes] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length"))
                self.bodies.append(await reader.readexactly(length))
                answer = self.answers.pop(0)
                writer.write(answer)
                await writer.drain()
                if b"connection: close" in answer.lower():
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()


def answer(status: int, body: bytes, *extra: str) -> bytes:
    headers = "".join(f"{h}\r\n" for h in extra)
    return (f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n{headers}\r\n"
            ).encode() + body


def run(scenario):
    async def main():
        forwarder = Forwarder(timeout=5)
        try:
            return await scenario(forwarder)
        finally:
            forwarder.close()
    return asyncio.run(main())


async def serve(container: Container) -> tuple[asyncio.AbstractServer, int]:
    server = await asyncio.start_server(container.handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


def test_answers_come_back_with_vertex_fields_on_one_kept_connection():
    container = Container([answer(200, b'{"predictions":[[7.5]]}'), answer(200, b'{"predictions":[[6.0],[8.0]]}')])

    async def scenario(forwarder):
        server, port = await serve(container)
        async with server:
            first = await forwarder.relay("127.0.0.1", port, "/predict", b'{"instances":[1]}', FIELDS)
            second = await forwarder.predictions("127.0.0.1", port, "/predict", [{"a": 1}, {"a": 2}])
        return first, second

    first, second = run(scenario)
    assert json.loads(first) == {"predictions": [[7.5]], "deployedModelId": "7"}
    assert second == [[6.0], [8.0]]
    assert container.connections == 1
    assert json.loads(container.bodies[1]) == {"instances": [{"a": 1}, {"a": 2}]}


def test_a_connection_the_container_closed_is_replaced_and_the_request_still_answered():
    container = Container([answer(200, b'{"predictions":[1]}', "Connection: close"), answer(200, b'{"predictions":[2]}')])

    async def scenario(forwarder):
        server, port = await serve(container)
        async with server:
            one = await forwarder.predictions("127.0.0.1", port, "/p", [1])
            await asyncio.sleep(0.05)  # the container has closed its end by now
            two = await forwarder.predictions("127.0.0.1", port, "/p", [2])
        return one, two

    assert run(scenario) == ([1], [2])
    assert container.connections == 2


def test_the_containers_errors_are_passed_on_and_an_absent_container_is_unavailable():
    refusal = b'{"error":{"code":400,"message":"instances[0].mother_age must be a number","status":"INVALID_ARGUMENT"}}'
    container = Container([answer(400, refusal), answer(200, b'{"nothing": 1}')])

    async def scenario(forwarder):
        server, port = await serve(container)
        async with server:
            with pytest.raises(ContainerAnswer) as refused:
                await forwarder.relay("127.0.0.1", port, "/p", b"{}", FIELDS)
            with pytest.raises(ApiError, match="without a \"predictions\" list"):
                await forwarder.relay("127.0.0.1", port, "/p", b"{}", FIELDS)
        server.close()
        await server.wait_closed()
        with pytest.raises(ApiError) as gone:
            await forwarder.predictions("127.0.0.1", port, "/p", [1])
        return refused.value, gone.value

    refused, gone = run(scenario)
    assert refused.status == 400 and refused.body == refusal
    assert gone.status == "UNAVAILABLE" and gone.http_status == 503


def test_other_shapes_of_a_200_answer_are_parsed_before_fields_are_added():
    assert json.loads(with_fields(b'{ "predictions" : [1, 2] }\n', FIELDS, "c")) == {
        "predictions": [1, 2], "deployedModelId": "7"}
    assert with_fields(b'{"predictions":[3]}', FIELDS, "c") == b'{"predictions":[3],"deployedModelId":"7"}'
    for bad in (b"[1]", b"not json", b'{"predictions": 3}'):
        with pytest.raises(ApiError):
            with_fields(bad, FIELDS, "c")
