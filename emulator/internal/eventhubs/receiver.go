package eventhubs

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/iotc-go/iotc/emulator/internal/amqp1"
)

// receiverSet is the receivers of one consumer group's partition; epoch
// receivers exclude the others. Guarded by Endpoint.mu.
type receiverSet struct {
	members []*link
}

// remove drops lk from its set.
func (rs *receiverSet) remove(e *Endpoint, lk *link) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for i, m := range rs.members {
		if m == lk {
			rs.members = append(rs.members[:i:i], rs.members[i+1:]...)
			return
		}
	}
}

// epochOf reads the com.microsoft:epoch link property.
func epochOf(l *amqp1.Link) (*int64, error) {
	for k, v := range l.Properties() {
		if !strings.EqualFold(k, propEpoch) {
			continue
		}
		var n int64
		switch v := v.(type) {
		case int64:
			n = v
		case int32:
			n = int64(v)
		case int16:
			n = int64(v)
		case int8:
			n = int64(v)
		case uint32:
			n = int64(v)
		case uint16:
			n = int64(v)
		case uint8:
			n = int64(v)
		case uint64:
			if v > 1<<62 {
				return nil, fmt.Errorf("epoch %d out of range", v)
			}
			n = int64(v)
		default:
			return nil, fmt.Errorf("epoch of type %T, want a long", v)
		}
		return &n, nil
	}
	return nil, nil
}

// attachReceiver accepts a consumer on {entity}/ConsumerGroups/{cg}/Partitions/{n}
// and starts sending it the partition's events from its filter's start.
//
// Epochs: a receiver with epoch E takes the partition from every
// receiver with no epoch or an epoch <= E (they are detached with
// amqp:link:stolen); a receiver with a lower epoch than a present one,
// or with no epoch while an epoch receiver is present, is refused with
// amqp:link:stolen.
func (c *Conn) attachReceiver(ctx context.Context, lk *link) error {
	l, n, e := lk.l, lk.node, c.e
	sel, err := selectorOf(l.Source())
	if err != nil {
		return &amqp1.Error{Condition: amqp1.ErrCondInvalidField, Description: err.Error()}
	}
	st := start{kind: startOffset, offset: -1}
	if sel != "" {
		if st, err = parseSelector(sel); err != nil {
			return &amqp1.Error{Condition: amqp1.ErrCondInvalidField, Description: err.Error()}
		}
	}
	epoch, err := epochOf(l)
	if err != nil {
		return &amqp1.Error{Condition: amqp1.ErrCondInvalidField, Description: err.Error()}
	}
	lk.epoch = epoch
	lk.rights = rightListen

	e.mu.Lock()
	en, p, err := e.lookupLocked(n.entity, n.partition)
	if err != nil {
		e.mu.Unlock()
		return notFound("%v", err)
	}
	group, ok := en.groups[strings.ToLower(n.group)]
	if !ok {
		e.mu.Unlock()
		return notFound("no consumer group %q in event hub %q", cut(n.group), en.name)
	}
	key := strings.ToLower(group) + "/" + n.partition
	rs := en.receiver[key]
	if rs == nil {
		rs = &receiverSet{}
		en.receiver[key] = rs
	}
	var stolen []*link
	for _, m := range rs.members {
		switch {
		case m.epoch != nil && (epoch == nil || *m.epoch > *epoch):
			have := *m.epoch
			e.mu.Unlock()
			if epoch == nil {
				return &amqp1.Error{Condition: amqp1.ErrCondStolen, Description: fmt.Sprintf("a receiver with epoch %d holds partition %s of consumer group %s: a receiver without epoch cannot be created", have, n.partition, group)}
			}
			return &amqp1.Error{Condition: amqp1.ErrCondStolen, Description: fmt.Sprintf("receiver with epoch %d refused: a receiver with the higher epoch %d holds partition %s of consumer group %s", *epoch, have, n.partition, group)}
		case epoch != nil:
			stolen = append(stolen, m)
		}
	}
	if len(stolen) > 0 {
		keep := rs.members[:0]
		for _, m := range rs.members {
			if !containsLink(stolen, m) {
				keep = append(keep, m)
			}
		}
		rs.members = keep
	}
	rs.members = append(rs.members, lk)
	lk.rs = rs
	e.trimLocked(p, e.now())
	next := firstSeq(st, p.events, p.nextSeq)
	e.mu.Unlock()

	lctx, cancel := context.WithCancel(l.Context())
	lk.cancel = cancel
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		cancel()
		rs.remove(e, lk)
		return &amqp1.Error{Condition: amqp1.ErrCondDetachForced, Description: "connection closing"}
	}
	c.links[l] = lk
	c.wg.Add(1)
	c.mu.Unlock()
	go c.pump(lctx, lk, p, next)
	c.watchToken(lk)

	for _, m := range stolen {
		desc := fmt.Sprintf("New receiver with higher epoch of '%d' is created hence current receiver with epoch '%s' is getting disconnected", *epoch, epochText(m.epoch))
		_ = m.l.Detach(&amqp1.Error{Condition: amqp1.ErrCondStolen, Description: desc})
	}
	return nil
}

func epochText(p *int64) string {
	if p == nil {
		return "none"
	}
	return fmt.Sprint(*p)
}

func containsLink(list []*link, lk *link) bool {
	for _, m := range list {
		if m == lk {
			return true
		}
	}
	return false
}

// pump sends the partition's events from sequence number next on, as
// link credit allows, until the link ends.
func (c *Conn) pump(ctx context.Context, lk *link, p *partition, next int64) {
	defer c.wg.Done()
	for ctx.Err() == nil {
		evs, after, wake := c.e.read(p, next, receiveBatch)
		if len(evs) == 0 {
			next = after
			select {
			case <-wake:
			case <-ctx.Done():
				return
			}
			continue
		}
		for _, ev := range evs {
			// Events go pre-settled, as Event Hubs sends them (a
			// consumer's settlement would not change what a partition
			// holds, and azeventhubs never settles them); on a link that
			// asked for unsettled deliveries the outcome is not awaited.
			err := lk.l.SendSettled(ctx, delivered(ev))
			if errors.Is(err, amqp1.ErrSettleMode) {
				_, err = lk.l.SendAsync(ctx, delivered(ev))
			}
			if err != nil {
				return
			}
		}
		next = after
	}
}
