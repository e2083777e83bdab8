// Command uploadbench measures issue 27's two features side by side with
// their baselines, against one in-process emulator:
//
//  1. file upload: a -size byte file (64 MiB by default) uploaded with
//     iotc.Client.UploadFile (SAS request to the hub, azblob block upload
//     to the emulator's blob endpoint, notification) beside a bare azblob
//     upload of the same bytes to the same endpoint with the account's
//     Shared Key (same block size and concurrency), -upload-rounds rounds
//     alternating who goes first; it prints the median MB/s of each and
//     the median of the per-round ratios SDK / bare;
//  2. batched telemetry: -messages 256-byte JSON messages sent with
//     SendTelemetryBatch (batches of -batch) beside SendTelemetry one at a
//     time (each waiting for its acknowledgement), over MQTT and over
//     AMQP, -batch-rounds rounds alternating order; it prints the median
//     messages per second, the ratio batch / single, and the process CPU
//     time per message (client and emulator together: the emulator is in
//     process, so the difference between the two paths is what batching
//     saves on both sides).
//
// Usage: go run ./bench/uploadbench [-size 67108864] [-upload-rounds 5]
// [-messages 20000] [-batch 100] [-batch-rounds 5] [-skip upload|batch]
package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"runtime"
	"slices"
	"strconv"
	"syscall"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"

	"github.com/iotc-go/iotc"
	"github.com/iotc-go/iotc/emulator"
)

func main() {
	size := flag.Int("size", 64<<20, "bytes of the uploaded file")
	uploadRounds := flag.Int("upload-rounds", 5, "upload rounds")
	messages := flag.Int("messages", 20000, "messages per batch-bench path and round")
	batch := flag.Int("batch", 100, "messages per SendTelemetryBatch call")
	batchRounds := flag.Int("batch-rounds", 5, "batch-bench rounds")
	skip := flag.String("skip", "", `"upload" or "batch" skips that part`)
	flag.Parse()
	if err := run(*size, *uploadRounds, *messages, *batch, *batchRounds, *skip); err != nil {
		fmt.Fprintln(os.Stderr, "uploadbench:", err)
		os.Exit(1)
	}
}

func run(size, uploadRounds, messages, batch, batchRounds int, skip string) error {
	ctx := context.Background()
	emu, err := emulator.Start(ctx, &emulator.Options{MQTTAddr: "127.0.0.1:0", RESTAddr: "-", TelemetryHistory: -1, RetryAfter: time.Millisecond})
	if err != nil {
		return err
	}
	defer emu.Close()
	if skip != "upload" {
		if err := uploadBench(ctx, emu, size, uploadRounds); err != nil {
			return err
		}
	}
	if skip != "batch" {
		if err := batchBench(ctx, emu, messages, batch, batchRounds); err != nil {
			return err
		}
	}
	return nil
}

func port(addr string) int {
	_, p, _ := net.SplitHostPort(addr)
	n, _ := strconv.Atoi(p)
	return n
}

func client(ctx context.Context, emu *emulator.Emulator, id string, tr iotc.Transport) (*iotc.Client, error) {
	host, _, _ := net.SplitHostPort(emu.MQTTAddr())
	cfg := iotc.Config{
		DeviceID: id, IDScope: emu.IDScope(), Credential: iotc.GroupKey(emu.GroupKey()),
		ProvisioningHost: host, Transport: tr, RootCAs: emu.CAPool(), WebSocketPort: port(emu.WebSocketAddr()),
		Port: port(emu.MQTTAddr()),
	}
	if tr == iotc.AMQP {
		cfg.Port = port(emu.AMQPAddr())
	}
	c, err := iotc.New(cfg)
	if err != nil {
		return nil, err
	}
	if err := c.Connect(ctx, nil); err != nil {
		return nil, err
	}
	return c, nil
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}

func uploadBench(ctx context.Context, emu *emulator.Emulator, size, rounds int) error {
	data := make([]byte, size)
	_, _ = rand.Read(data)
	c, err := client(ctx, emu, "upload-bench", iotc.MQTT)
	if err != nil {
		return err
	}
	defer c.Close(ctx)
	bare, err := azblob.NewClientFromConnectionString(emu.StorageConnectionString(), &azblob.ClientOptions{ClientOptions: azcore.ClientOptions{
		Transport: &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: emu.CAPool(), MinVersion: tls.VersionTLS12}, ForceAttemptHTTP2: true, MaxIdleConnsPerHost: 16}},
	}})
	if err != nil {
		return err
	}
	const block, conc = 4 << 20, 4
	mb := float64(size) / (1 << 20)
	var sdk, raw, ratio []float64
	for r := -1; r < rounds; r++ { // round -1 warms both paths up and is not counted
		var tSDK, tRaw time.Duration
		runSDK := func() error {
			start := time.Now()
			_, err := c.UploadFile(ctx, fmt.Sprintf("bench/sdk-%d.bin", r), bytes.NewReader(data), int64(size), &iotc.UploadOptions{BlockSize: block, Concurrency: conc})
			tSDK = time.Since(start)
			return err
		}
		runRaw := func() error {
			start := time.Now()
			_, err := bare.UploadStream(ctx, "fileuploads", fmt.Sprintf("bench/raw-%d.bin", r), bytes.NewReader(data), &azblob.UploadStreamOptions{BlockSize: block, Concurrency: conc})
			tRaw = time.Since(start)
			return err
		}
		order := []func() error{runSDK, runRaw}
		if r%2 == 1 { // the warm-up round (-1) goes SDK first: it makes the container
			order = []func() error{runRaw, runSDK}
		}
		for _, f := range order {
			runtime.GC() // the other path's garbage is not this one's cost
			if err := f(); err != nil {
				return err
			}
		}
		// The blobs go, so that the in-memory store does not grow round
		// after round.
		for _, name := range []string{fmt.Sprintf("upload-bench/bench/sdk-%d.bin", r), fmt.Sprintf("bench/raw-%d.bin", r)} {
			if _, err := bare.DeleteBlob(ctx, "fileuploads", name, nil); err != nil {
				return err
			}
		}
		if r < 0 {
			continue
		}
		sdk = append(sdk, mb/tSDK.Seconds())
		raw = append(raw, mb/tRaw.Seconds())
		ratio = append(ratio, tRaw.Seconds()/tSDK.Seconds())
	}
	fmt.Printf("File upload, %.0f MiB, %d rounds (4 MiB blocks, 4 in flight), emulator in process:\n", mb, rounds)
	fmt.Printf("| path | MB/s (median) | ratio to bare azblob (median, range) |\n|---|---|---|\n")
	fmt.Printf("| iotc.Client.UploadFile (SAS request + upload + notification) | %.0f | %.2f (%.2f-%.2f) |\n", median(sdk), median(ratio), slices.Min(ratio), slices.Max(ratio))
	fmt.Printf("| bare azblob UploadStream, Shared Key | %.0f | 1.00 |\n\n", median(raw))
	return nil
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func batchBench(ctx context.Context, emu *emulator.Emulator, messages, batch, rounds int) error {
	body := map[string]any{"temperature": 21.5, "humidity": 40.25, "pad": string(bytes.Repeat([]byte("x"), 200))}
	fmt.Printf("Batched telemetry, %d messages of about 256 bytes per path and round, batches of %d, %d rounds, emulator in process:\n", messages, batch, rounds)
	fmt.Printf("| transport | path | msgs/s (median) | ratio to single | cpu µs per message (process) |\n|---|---|---|---|---|\n")
	for _, tr := range []iotc.Transport{iotc.MQTT, iotc.AMQP} {
		name := map[iotc.Transport]string{iotc.MQTT: "MQTT", iotc.AMQP: "AMQP"}[tr]
		c, err := client(ctx, emu, "batch-bench-"+name, tr)
		if err != nil {
			return err
		}
		msgs := make([]iotc.BatchMessage, batch)
		for i := range msgs {
			msgs[i] = iotc.BatchMessage{Payload: body}
		}
		var single, batched, ratio, cpuSingle, cpuBatch []float64
		for r := range rounds {
			runSingle := func() (float64, float64, error) {
				c0, start := cpuTime(), time.Now()
				for range messages {
					if err := c.SendTelemetry(ctx, body, nil); err != nil {
						return 0, 0, err
					}
				}
				return float64(messages) / time.Since(start).Seconds(), float64((cpuTime() - c0).Microseconds()) / float64(messages), nil
			}
			runBatch := func() (float64, float64, error) {
				c0, start := cpuTime(), time.Now()
				for sent := 0; sent < messages; sent += batch {
					if err := c.SendTelemetryBatch(ctx, msgs[:min(batch, messages-sent)]); err != nil {
						return 0, 0, err
					}
				}
				return float64(messages) / time.Since(start).Seconds(), float64((cpuTime() - c0).Microseconds()) / float64(messages), nil
			}
			var s, b, cs, cb float64
			if r%2 == 0 {
				if s, cs, err = runSingle(); err == nil {
					b, cb, err = runBatch()
				}
			} else {
				if b, cb, err = runBatch(); err == nil {
					s, cs, err = runSingle()
				}
			}
			if err != nil {
				_ = c.Close(ctx)
				return err
			}
			single, batched, ratio = append(single, s), append(batched, b), append(ratio, b/s)
			cpuSingle, cpuBatch = append(cpuSingle, cs), append(cpuBatch, cb)
		}
		_ = c.Close(ctx)
		fmt.Printf("| %s | SendTelemetryBatch (%d per call) | %.0f | %.1f (%.1f-%.1f) | %.1f |\n", name, batch, median(batched), median(ratio), slices.Min(ratio), slices.Max(ratio), median(cpuBatch))
		fmt.Printf("| %s | SendTelemetry, one at a time | %.0f | 1.0 | %.1f |\n", name, median(single), median(cpuSingle))
	}
	return nil
}
