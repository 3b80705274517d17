# syntax=docker/dockerfile:1
# Build: a static binary (FerretDB's SQLite is pure Go, so no cgo).
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/flashstock ./cmd/flashstock

# Run: distroless, non-root.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/flashstock /flashstock
USER nonroot:nonroot
WORKDIR /home/nonroot
ENV PORT=3000
# Without REDIS_URL and MONGODB_URI the image runs the embedded mode, which listens on
# 127.0.0.1 (its demo admin's password is published): set HOST=0.0.0.0 to publish it on
# purpose. With external stores it listens on every interface.
EXPOSE 3000
HEALTHCHECK --interval=10s --timeout=3s --retries=3 CMD ["/flashstock", "healthcheck"]
ENTRYPOINT ["/flashstock"]
CMD ["serve"]
