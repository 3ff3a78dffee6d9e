#!/bin/sh
# Run by the CronJob gleam-index-rebuild-cron (cronjob.yaml): create one RayJob from the jobTemplate of
# the RayCronJob $TEMPLATE (one definition for both schedules), then wait for it to end, so the
# CronJob's concurrencyPolicy: Forbid keeps this schedule's runs from overlapping. Exits 0 when the
# Ray job SUCCEEDED (a build skipped because another one holds the index lease succeeds too).
set -eu
: "${TEMPLATE:?name of the RayCronJob whose jobTemplate to run}"
: "${SCHEDULE_LABEL:?label value that marks this schedule's RayJobs}"
POLL_SECONDS="${POLL_SECONDS:-30}"

spec=$(kubectl get raycronjob "$TEMPLATE" -o jsonpath='{.spec.jobTemplate}')
if [ -z "$spec" ]; then
    echo "raycronjob/$TEMPLATE has no jobTemplate" >&2
    exit 1
fi

# Earlier runs of this schedule that succeeded are removed; failed ones stay for inspection.
kubectl get rayjobs -l "gleam.io/schedule=$SCHEDULE_LABEL" \
    -o jsonpath='{range .items[?(@.status.jobStatus=="SUCCEEDED")]}{.metadata.name}{"\n"}{end}' \
    | xargs -r kubectl delete rayjob

manifest=$(printf '{"apiVersion":"ray.io/v1","kind":"RayJob","metadata":{"generateName":"%s-","labels":{"app.kubernetes.io/part-of":"gleam","gleam.io/schedule":"%s"}},"spec":%s}' \
    "$TEMPLATE" "$SCHEDULE_LABEL" "$spec")
name=$(printf '%s' "$manifest" | kubectl create -f - -o name)
echo "created $name from raycronjob/$TEMPLATE"

while :; do
    state=$(kubectl get "$name" -o jsonpath='{.status.jobDeploymentStatus}')
    case "$state" in
        Complete | Failed | ValidationFailed)
            status=$(kubectl get "$name" -o jsonpath='{.status.jobStatus}')
            echo "$name: $state, job $status"
            if [ "$status" = SUCCEEDED ]; then
                exit 0
            fi
            exit 1
            ;;
    esac
    sleep "$POLL_SECONDS"
done
