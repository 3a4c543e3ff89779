"""AWS IoT fleet provisioning, as firmware built on the AWS IoT Device SDK for Python does
it, against any endpoint: CreateCertificateFromCsr (or CreateKeysAndCertificate), then
RegisterThing. The SDK is used unmodified; this script only wires its calls the way the
SDK's own fleet provisioning samples do.

MQTT 3.1.1 (--protocol mqtt3) uses the SDK's IotIdentityClient over an awscrt
mqtt.Connection (explicit subscriptions, then publishes); MQTT 5 (--protocol mqtt5) uses
IotIdentityClientV2, the request-response client, over an awscrt mqtt5.Client.

With --spy, listens on every answer topic instead (run_spy).

Prints one JSON object: {"created": {...}, "registered": {...}} on success, or
{"rejected": {"step": ..., "statusCode": ..., "errorCode": ..., "errorMessage": ...}},
or {"error": "..."} when the connection itself fails. Exit code 0 in all three cases
(the caller asserts on the JSON); 2 for a usage error.
"""

import argparse
import json
import sys
import threading
from concurrent.futures import Future

from awscrt import mqtt, mqtt5, mqtt_request_response
from awsiot import iotidentity, mqtt5_client_builder, mqtt_connection_builder

TIMEOUT = 20


def rejected(step, error):
    return {"rejected": {"step": step, "statusCode": error.status_code,
                         "errorCode": error.error_code, "errorMessage": error.error_message}}


def created_view(response, private_key=None):
    out = {"certificateId": response.certificate_id, "certificatePem": response.certificate_pem,
           "certificateOwnershipToken": response.certificate_ownership_token}
    if private_key is not None:
        out["privateKey"] = private_key
    return out


def wait_answer(subscribe_accepted, subscribe_rejected, publish):
    """Subscribes to both answers (awaiting each SUBACK), publishes (awaiting PUBACK),
    and returns ("accepted" | "rejected", response) for the first answer."""
    answer = Future()

    def on(kind):
        def callback(response):
            if not answer.done():
                answer.set_result((kind, response))
        return callback

    for subscribe, kind in ((subscribe_accepted, "accepted"), (subscribe_rejected, "rejected")):
        future, _ = subscribe(mqtt.QoS.AT_LEAST_ONCE, on(kind))
        future.result(TIMEOUT)
    publish(mqtt.QoS.AT_LEAST_ONCE).result(TIMEOUT)
    return answer.result(TIMEOUT)


def run_mqtt3(args, csr):
    connection = mqtt_connection_builder.mtls_from_path(
        endpoint=args.endpoint, port=args.port, cert_filepath=args.cert,
        pri_key_filepath=args.key, ca_filepath=args.ca, client_id=args.client_id,
        clean_session=False, keep_alive_secs=6)
    connection.connect().result(TIMEOUT)
    try:
        identity = iotidentity.IotIdentityClient(connection)
        if csr is not None:
            request = iotidentity.CreateCertificateFromCsrRequest(certificate_signing_request=csr)
            kind, response = wait_answer(
                lambda q, cb: identity.subscribe_to_create_certificate_from_csr_accepted(
                    iotidentity.CreateCertificateFromCsrSubscriptionRequest(), q, cb),
                lambda q, cb: identity.subscribe_to_create_certificate_from_csr_rejected(
                    iotidentity.CreateCertificateFromCsrSubscriptionRequest(), q, cb),
                lambda q: identity.publish_create_certificate_from_csr(request, q))
            step = "CreateCertificateFromCsr"
            if kind == "rejected":
                return rejected(step, response)
            created = created_view(response)
        else:
            request = iotidentity.CreateKeysAndCertificateRequest()
            kind, response = wait_answer(
                lambda q, cb: identity.subscribe_to_create_keys_and_certificate_accepted(
                    iotidentity.CreateKeysAndCertificateSubscriptionRequest(), q, cb),
                lambda q, cb: identity.subscribe_to_create_keys_and_certificate_rejected(
                    iotidentity.CreateKeysAndCertificateSubscriptionRequest(), q, cb),
                lambda q: identity.publish_create_keys_and_certificate(request, q))
            if kind == "rejected":
                return rejected("CreateKeysAndCertificate", response)
            created = created_view(response, response.private_key)
        token = args.ownership_token or created["certificateOwnershipToken"]
        register = iotidentity.RegisterThingRequest(
            template_name=args.template, certificate_ownership_token=token,
            parameters=dict(p.split("=", 1) for p in args.parameter))
        sub = iotidentity.RegisterThingSubscriptionRequest(template_name=args.template)
        kind, response = wait_answer(
            lambda q, cb: identity.subscribe_to_register_thing_accepted(sub, q, cb),
            lambda q, cb: identity.subscribe_to_register_thing_rejected(sub, q, cb),
            lambda q: identity.publish_register_thing(register, q))
        if kind == "rejected":
            out = rejected("RegisterThing", response)
            out["created"] = created
            return out
        return {"created": created, "registered": {
            "thingName": response.thing_name, "deviceConfiguration": response.device_configuration}}
    finally:
        connection.disconnect().result(TIMEOUT)


def v2_rejected(step, e):
    error = getattr(e, "modeled_error", None)
    if error is None:
        return {"error": f"{step}: {e!r}"}
    return rejected(step, error)


def run_mqtt5(args, csr):
    connected = threading.Event()
    failure = []
    client = mqtt5_client_builder.mtls_from_path(
        endpoint=args.endpoint, port=args.port, cert_filepath=args.cert,
        pri_key_filepath=args.key, ca_filepath=args.ca, client_id=args.client_id,
        on_lifecycle_connection_success=lambda _: connected.set(),
        on_lifecycle_connection_failure=lambda data: (failure.append(repr(data.exception)), connected.set()))
    client.start()
    try:
        if not connected.wait(TIMEOUT) or failure:
            return {"error": "connection failed: " + ", ".join(failure or ["timed out"])}
        identity = iotidentity.IotIdentityClientV2(client, mqtt_request_response.ClientOptions(
            max_request_response_subscriptions=2, max_streaming_subscriptions=2,
            operation_timeout_in_seconds=TIMEOUT))
        try:
            if csr is not None:
                response = identity.create_certificate_from_csr(
                    iotidentity.CreateCertificateFromCsrRequest(certificate_signing_request=csr)).result(TIMEOUT)
                created = created_view(response)
            else:
                response = identity.create_keys_and_certificate(
                    iotidentity.CreateKeysAndCertificateRequest()).result(TIMEOUT)
                created = created_view(response, response.private_key)
        except Exception as e:  # the SDK's V2ServiceException carries the /rejected body
            return v2_rejected("Create", e)
        token = args.ownership_token or created["certificateOwnershipToken"]
        try:
            response = identity.register_thing(iotidentity.RegisterThingRequest(
                template_name=args.template, certificate_ownership_token=token,
                parameters=dict(p.split("=", 1) for p in args.parameter))).result(TIMEOUT)
        except Exception as e:
            out = v2_rejected("RegisterThing", e)
            out["created"] = created
            return out
        return {"created": created, "registered": {
            "thingName": response.thing_name, "deviceConfiguration": response.device_configuration}}
    finally:
        client.stop()


def run_spy(args):
    """A claimant that subscribes to every answer topic it may, says so on stdout, listens
    while others provision (until a line on stdin, or --spy seconds), then sends one bad
    request of its own: it must receive exactly its own rejection, which also proves it
    was subscribed all along."""
    connection = mqtt_connection_builder.mtls_from_path(
        endpoint=args.endpoint, port=args.port, cert_filepath=args.cert,
        pri_key_filepath=args.key, ca_filepath=args.ca, client_id=args.client_id,
        clean_session=True, keep_alive_secs=30)
    connection.connect().result(TIMEOUT)
    received = []
    own = threading.Event()

    def on_message(topic, payload, **_):
        received.append({"topic": topic, "payload": json.loads(payload)})
        if topic == "$aws/certificates/create-from-csr/json/rejected":
            own.set()

    try:
        for topic in ("$aws/certificates/create-from-csr/json/+", "$aws/certificates/create/json/+",
                      f"$aws/provisioning-templates/{args.template}/provision/json/+"):
            future, _ = connection.subscribe(topic, mqtt.QoS.AT_LEAST_ONCE, on_message)
            future.result(TIMEOUT)
        print(json.dumps({"subscribed": True}))
        sys.stdout.flush()
        reader = threading.Thread(target=sys.stdin.readline, daemon=True)
        reader.start()
        reader.join(args.spy)
        before = len(received)
        future, _ = connection.publish("$aws/certificates/create-from-csr/json", b"{}", mqtt.QoS.AT_LEAST_ONCE)
        future.result(TIMEOUT)
        own.wait(TIMEOUT)
        return {"received": received, "before_own_request": before}
    finally:
        connection.disconnect().result(TIMEOUT)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--ca", required=True)
    parser.add_argument("--cert", required=True, help="the claim certificate (PEM)")
    parser.add_argument("--key", required=True, help="the claim key (PEM)")
    parser.add_argument("--client-id", required=True)
    parser.add_argument("--template", required=True)
    parser.add_argument("--csr", help="a CSR file: CreateCertificateFromCsr; none: CreateKeysAndCertificate")
    parser.add_argument("--parameter", action="append", default=[], help="Name=value, for RegisterThing")
    parser.add_argument("--ownership-token", help="send this token instead of the one created")
    parser.add_argument("--protocol", choices=["mqtt3", "mqtt5"], default="mqtt3")
    parser.add_argument("--spy", type=float, help="listen this many seconds as a spy (see run_spy)")
    args = parser.parse_args()
    csr = open(args.csr).read() if args.csr else None
    try:
        if args.spy is not None:
            result = run_spy(args)
        else:
            result = (run_mqtt3 if args.protocol == "mqtt3" else run_mqtt5)(args, csr)
    except Exception as e:
        result = {"error": repr(e)}
    print(json.dumps(result))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
