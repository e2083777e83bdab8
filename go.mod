module github.com/iotc-go/iotc

go 1.26

require (
	github.com/Azure/go-amqp v1.7.0
	github.com/eclipse/paho.mqtt.golang v1.5.1
	github.com/golang/mock v1.6.0
	github.com/mochi-mqtt/server/v2 v2.7.9
	go.uber.org/goleak v1.3.0
	gopkg.in/natefinch/lumberjack.v2 v2.2.1
	nhooyr.io/websocket v1.8.17
)

require (
	github.com/gorilla/websocket v1.5.3 // indirect
	github.com/rs/xid v1.4.0 // indirect
	golang.org/x/net v0.44.0 // indirect
	golang.org/x/sync v0.17.0 // indirect
)
