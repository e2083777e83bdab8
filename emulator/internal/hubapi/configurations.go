package hubapi

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/iotc-go/iotc/emulator/internal/core"
)

// Configurations (automatic device management): the document is stored by
// the core; here its target condition and metric queries are checked and
// evaluated, and its device content (properties.desired.*) is applied as a
// desired-properties merge patch to the devices the target condition
// selects when it is created or updated. Priorities between overlapping
// configurations are not modelled (the last applied wins).

// configBody is the part of a configuration document the emulator reads.
type configBody struct {
	ID              string `json:"id"`
	TargetCondition string `json:"targetCondition"`
	Content         *struct {
		DeviceContent  map[string]any `json:"deviceContent"`
		ModulesContent map[string]any `json:"modulesContent"`
	} `json:"content"`
	Metrics *struct {
		Queries map[string]string `json:"queries"`
	} `json:"metrics"`
}

// readConfig decodes a configuration document twice: as the map the core
// stores and as the fields the emulator checks.
func readConfig(r *http.Request) (map[string]any, configBody, error) {
	var doc map[string]any
	if err := readJSON(r, &doc); err != nil {
		return nil, configBody{}, err
	}
	var b configBody
	if err := remarshal(doc, &b); err != nil {
		return nil, configBody{}, fmt.Errorf("%w: configuration: %v", errBadRequest, err)
	}
	return doc, b, nil
}

// whereQuery parses a WHERE clause of the query language; "" selects nothing.
func whereQuery(cond string) (*query, error) {
	if strings.TrimSpace(cond) == "" {
		return nil, nil
	}
	q, err := parseQuery("SELECT deviceId FROM devices WHERE " + cond)
	if err == nil && len(q.groupBy) > 0 {
		err = fmt.Errorf("%w: GROUP BY in a condition", errQuery)
	}
	return q, err
}

// desiredOf turns deviceContent ({"properties.desired.a.b": v}) into a
// desired-properties merge patch.
func desiredOf(content map[string]any) (map[string]any, error) {
	patch := map[string]any{}
	for k, v := range content {
		rest, ok := strings.CutPrefix(k, "properties.desired")
		if !ok {
			return nil, fmt.Errorf("%w: deviceContent key %q: only properties.desired[.path] is supported", errBadRequest, k)
		}
		if rest == "" {
			m, ok := v.(map[string]any)
			if !ok {
				return nil, fmt.Errorf("%w: deviceContent properties.desired must be an object", errBadRequest)
			}
			for pk, pv := range m {
				patch[pk] = pv
			}
			continue
		}
		segs := strings.Split(strings.TrimPrefix(rest, "."), ".")
		cur := patch
		for _, s := range segs[:len(segs)-1] {
			next, _ := cur[s].(map[string]any)
			if next == nil {
				next = map[string]any{}
				cur[s] = next
			}
			cur = next
		}
		cur[segs[len(segs)-1]] = v
	}
	return patch, nil
}

// checkConfig validates what the emulator evaluates.
func checkConfig(b configBody) (map[string]any, error) {
	if _, err := whereQuery(b.TargetCondition); err != nil {
		return nil, fmt.Errorf("targetCondition: %w", err)
	}
	if b.Metrics != nil {
		for name, q := range b.Metrics.Queries {
			if _, err := parseQuery(q); err != nil {
				return nil, fmt.Errorf("metric %s: %w", name, err)
			}
		}
	}
	if b.Content == nil {
		return nil, nil
	}
	if len(b.Content.ModulesContent) > 0 {
		return nil, fmt.Errorf("%w: modulesContent is not supported by the emulator (it runs no IoT Edge deployments)", errBadRequest)
	}
	return desiredOf(b.Content.DeviceContent)
}

// twinDocs are the twins as queries see them.
func (h *Handler) twinDocs() []map[string]any {
	twins := h.core.HubTwins()
	docs := make([]map[string]any, len(twins))
	for i, t := range twins {
		docs[i] = twinJSON(t)
	}
	return docs
}

// selected runs a query and returns the device ids of its rows.
func selected(q *query, docs []map[string]any) []string {
	if q == nil {
		return nil
	}
	var ids []string
	for _, row := range q.run(docs) {
		if m, ok := row.(map[string]any); ok {
			if id, ok := m["deviceId"].(string); ok {
				ids = append(ids, id)
			}
		}
	}
	return ids
}

// configJSON is a configuration as IoT Hub returns it, with its system and
// custom metrics evaluated now.
func (h *Handler) configJSON(cfg core.Configuration) map[string]any {
	out := map[string]any{}
	for k, v := range cfg.Doc {
		out[k] = v
	}
	var b configBody
	_ = remarshal(cfg.Doc, &b)
	docs := h.twinDocs()
	targeted := 0
	if q, err := whereQuery(b.TargetCondition); err == nil {
		targeted = len(selected(q, docs))
	}
	out["id"], out["etag"] = cfg.ID, unquote(cfg.ETag())
	if _, ok := out["schemaVersion"]; !ok {
		out["schemaVersion"] = "1.0"
	}
	out["createdTimeUtc"] = cfg.Created.UTC().Format(time.RFC3339Nano)
	out["lastUpdatedTimeUtc"] = cfg.Updated.UTC().Format(time.RFC3339Nano)
	out["systemMetrics"] = map[string]any{
		"queries": map[string]any{},
		"results": map[string]any{"targetedCount": targeted, "appliedCount": len(cfg.Applied)},
	}
	queries, results := map[string]any{}, map[string]any{}
	if b.Metrics != nil {
		for name, qs := range b.Metrics.Queries {
			queries[name] = qs
			if q, err := parseQuery(qs); err == nil {
				results[name] = len(q.run(docs))
			}
		}
	}
	out["metrics"] = map[string]any{"queries": queries, "results": results}
	return out
}

func (h *Handler) putConfiguration(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	doc, b, err := readConfig(r)
	if err != nil {
		return err
	}
	if b.ID != "" && b.ID != id {
		return fmt.Errorf("%w: id %q in the body is not %q of the path", errBadRequest, b.ID, id)
	}
	patch, err := checkConfig(b)
	if err != nil {
		return err
	}
	for _, k := range []string{"etag", "createdTimeUtc", "lastUpdatedTimeUtc", "systemMetrics"} {
		delete(doc, k)
	}
	if m, ok := doc["metrics"].(map[string]any); ok {
		delete(m, "results")
	}
	ifMatch, update := r.Header["If-Match"]
	m := ""
	if update && len(ifMatch) > 0 {
		m = ifMatch[0]
	}
	cfg, err := h.core.PutConfiguration(id, !update, m, doc)
	if err != nil {
		return err
	}
	if len(patch) > 0 {
		q, _ := whereQuery(b.TargetCondition)
		if err := h.applyContent(r.Context(), cfg.ID, selected(q, h.twinDocs()), patch); err != nil {
			return err
		}
		if cfg, err = h.core.Configuration(id); err != nil {
			return err
		}
	}
	writeJSON(w, http.StatusOK, h.configJSON(cfg))
	return nil
}

// applyContent applies a desired patch to the devices and records it.
func (h *Handler) applyContent(ctx context.Context, configID string, ids []string, patch map[string]any) error {
	var done []string
	for _, id := range ids {
		if _, err := h.core.UpdateHubTwin(ctx, id, "*", nil, deepCopy(patch), false); err != nil {
			if errors.Is(err, core.ErrNotFound) {
				continue // deleted meanwhile
			}
			return err
		}
		done = append(done, id)
	}
	if configID == "" {
		return nil
	}
	return h.core.MarkConfigurationApplied(configID, done)
}

func (h *Handler) getConfiguration(w http.ResponseWriter, r *http.Request) error {
	cfg, err := h.core.Configuration(r.PathValue("id"))
	if h.configNotFound(w, r, err) {
		return nil
	}
	if err != nil {
		return err
	}
	w.Header().Set("ETag", cfg.ETag())
	writeJSON(w, http.StatusOK, h.configJSON(cfg))
	return nil
}

func (h *Handler) listConfigurations(w http.ResponseWriter, _ *http.Request) error {
	out := []any{}
	for _, cfg := range h.core.Configurations() {
		out = append(out, h.configJSON(cfg))
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (h *Handler) deleteConfiguration(w http.ResponseWriter, r *http.Request) error {
	err := h.core.DeleteConfiguration(r.PathValue("id"), r.Header.Get("If-Match"))
	if h.configNotFound(w, r, err) {
		return nil
	}
	if err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// testConfigQueries checks a target condition and metric queries
// (POST /configurations/testQueries).
func (h *Handler) testConfigQueries(w http.ResponseWriter, r *http.Request) error {
	var b struct {
		TargetCondition     string            `json:"targetCondition"`
		CustomMetricQueries map[string]string `json:"customMetricQueries"`
	}
	if err := readJSON(r, &b); err != nil {
		return err
	}
	out := map[string]any{"targetConditionError": "", "customMetricQueryErrors": map[string]string{}}
	if _, err := whereQuery(b.TargetCondition); err != nil {
		out["targetConditionError"] = err.Error()
	}
	errs := map[string]string{}
	for name, q := range b.CustomMetricQueries {
		if _, err := parseQuery(q); err != nil {
			errs[name] = err.Error()
		}
	}
	out["customMetricQueryErrors"] = errs
	writeJSON(w, http.StatusOK, out)
	return nil
}

// applyConfigurationContent applies deviceContent to one device.
func (h *Handler) applyConfigurationContent(w http.ResponseWriter, r *http.Request) error {
	var b struct {
		DeviceContent  map[string]any `json:"deviceContent"`
		ModulesContent map[string]any `json:"modulesContent"`
	}
	if err := readJSON(r, &b); err != nil {
		return err
	}
	if len(b.ModulesContent) > 0 {
		return fmt.Errorf("%w: modulesContent is not supported by the emulator (it runs no IoT Edge deployments)", errBadRequest)
	}
	patch, err := desiredOf(b.DeviceContent)
	if err != nil {
		return err
	}
	id := r.PathValue("id")
	if _, err := h.core.HubDevice(id); err != nil {
		return err
	}
	if len(patch) > 0 {
		if _, err := h.core.UpdateHubTwin(r.Context(), id, "*", nil, patch, false); err != nil {
			return err
		}
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// configNotFound answers IoT Hub's ConfigurationNotFound.
func (h *Handler) configNotFound(w http.ResponseWriter, r *http.Request, err error) bool {
	if errors.Is(err, core.ErrNotFound) {
		h.fail(w, r, http.StatusNotFound, "ConfigurationNotFound", 404010, err.Error())
		return true
	}
	return false
}
