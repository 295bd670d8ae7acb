# Verdict's container image, as the Helm chart (helm/verdict) expects it:
#   /usr/local/bin/verdict                 the binary
#   /usr/lib/verdict/libonnxruntime.so     ONNX Runtime, loaded at start
#   /etc/verdict/examples, /etc/verdict/models
#                                          the default schema, features,
#                                          rules and model (image.bundle)
# It runs as uid 10001 with a read-only root file system; state (the feature
# snapshot) goes to /var/lib/verdict.
#
#   docker build -t verdict .

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p verdict \
 && cp target/release/verdict /verdict

# ONNX Runtime from the same wheel the tests use (models/train/requirements.txt).
FROM python:3.11-slim-bookworm AS ort
RUN pip install --no-cache-dir --no-deps onnxruntime==1.22.1 \
 && cp "$(ls /usr/local/lib/python3.11/site-packages/onnxruntime/capi/libonnxruntime.so.* | head -n 1)" \
       /libonnxruntime.so

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libssl3 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin verdict \
 && mkdir -p /var/lib/verdict && chown verdict:verdict /var/lib/verdict
COPY --from=build /verdict /usr/local/bin/verdict
COPY --from=ort /libonnxruntime.so /usr/lib/verdict/libonnxruntime.so
COPY examples /etc/verdict/examples
COPY models/fraud-gbt.onnx models/fraud-gbt.manifest.toml models/fraud-gbt.covers.json /etc/verdict/models/
ENV ORT_DYLIB_PATH=/usr/lib/verdict/libonnxruntime.so
USER 10001:10001
EXPOSE 9464
ENTRYPOINT ["/usr/local/bin/verdict"]
CMD ["run", "--config", "/etc/verdict-config/verdict.toml"]
