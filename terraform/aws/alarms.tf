# Alarms: what an operator must hear about without watching a dashboard.
# Every alarm notifies one SNS topic when it fires and when it clears;
# alarm_email subscribes an address, and anything else (a pager, a chat
# integration) can subscribe to the topic (output alarm_topic_arn). The
# thresholds are variables with defaults for a small fleet.
#
#   the API's 5xx rate      the gateways' and the load balancer's own 5xx
#                           over all requests, per minute, 3 minutes running
#   response time           the gateways' p90 over 5 minutes, 3 periods
#   unhealthy gateways      any target failing its health check, 3 minutes
#   each server's status    EC2's instance and system status checks, 2 minutes
#                           (a client node failing them is replaced by its
#                           Auto Scaling group)

resource "aws_sns_topic" "alarms" {
  name_prefix       = "${local.name}-alarms-"
  kms_master_key_id = aws_kms_key.alarms.arn
}

resource "aws_sns_topic_subscription" "alarm_email" {
  count = var.alarm_email == "" ? 0 : 1

  topic_arn = aws_sns_topic.alarms.arn
  protocol  = "email"
  endpoint  = var.alarm_email
}

# The topic's own key: CloudWatch may publish to an encrypted topic only
# when the key's policy lets it use the key, which AWS-managed keys do
# not (and the cluster's key should not grant a service outside it).
resource "aws_kms_key" "alarms" {
  description             = "slm-mesh ${local.name}: the alarms topic"
  enable_key_rotation     = true
  deletion_window_in_days = 7
  policy                  = data.aws_iam_policy_document.alarms_key.json
}

data "aws_iam_policy_document" "alarms_key" {
  # The account administers the key, as with a key's default policy. In a
  # key policy, "*" as the resource is the key itself.
  statement {
    sid       = "Account"
    actions   = ["kms:*"]
    resources = ["*"]

    principals {
      type        = "AWS"
      identifiers = ["arn:${data.aws_partition.current.partition}:iam::${data.aws_caller_identity.current.account_id}:root"]
    }
  }

  statement {
    sid       = "CloudWatchPublishes"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey*"]
    resources = ["*"]

    principals {
      type        = "Service"
      identifiers = ["cloudwatch.amazonaws.com"]
    }
  }
}

locals {
  alarm_actions = [aws_sns_topic.alarms.arn]
  lb_dimension  = { LoadBalancer = aws_lb.api.arn_suffix }
  tg_dimensions = merge(local.lb_dimension, { TargetGroup = aws_lb_target_group.gateway.arn_suffix })
}

resource "aws_cloudwatch_metric_alarm" "api_5xx" {
  alarm_name          = "${local.name}-api-5xx"
  alarm_description   = "More than ${var.alarm_5xx_percent}% of the API's requests answered 5xx (gateways or load balancer) for 3 minutes."
  comparison_operator = "GreaterThanThreshold"
  threshold           = var.alarm_5xx_percent
  evaluation_periods  = 3
  datapoints_to_alarm = 3
  # No request in a minute is no error.
  treat_missing_data = "notBreaching"
  alarm_actions      = local.alarm_actions
  ok_actions         = local.alarm_actions

  metric_query {
    id          = "percent"
    expression  = "100 * (FILL(target, 0) + FILL(lb, 0)) / requests"
    label       = "5xx, % of requests"
    return_data = true
  }

  dynamic "metric_query" {
    for_each = {
      target   = "HTTPCode_Target_5XX_Count"
      lb       = "HTTPCode_ELB_5XX_Count"
      requests = "RequestCount"
    }

    content {
      id = metric_query.key

      metric {
        namespace   = "AWS/ApplicationELB"
        metric_name = metric_query.value
        dimensions  = local.lb_dimension
        period      = 60
        stat        = "Sum"
      }
    }
  }
}

resource "aws_cloudwatch_metric_alarm" "api_response_time" {
  alarm_name          = "${local.name}-api-response-time"
  alarm_description   = "The gateways' p90 response time above ${var.alarm_response_seconds}s for 15 minutes."
  namespace           = "AWS/ApplicationELB"
  metric_name         = "TargetResponseTime"
  dimensions          = local.tg_dimensions
  extended_statistic  = "p90"
  period              = 300
  evaluation_periods  = 3
  comparison_operator = "GreaterThanThreshold"
  threshold           = var.alarm_response_seconds
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
}

resource "aws_cloudwatch_metric_alarm" "unhealthy_gateways" {
  alarm_name          = "${local.name}-unhealthy-gateways"
  alarm_description   = "A gateway has failed the load balancer's health check (/health: gateway, caller and inference reachable) for 3 minutes."
  namespace           = "AWS/ApplicationELB"
  metric_name         = "UnHealthyHostCount"
  dimensions          = local.tg_dimensions
  statistic           = "Maximum"
  period              = 60
  evaluation_periods  = 3
  comparison_operator = "GreaterThanThreshold"
  threshold           = 0
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
}

resource "aws_cloudwatch_metric_alarm" "node_status" {
  for_each = local.nodes

  alarm_name          = "${local.name}-${each.key}-status"
  alarm_description   = "${each.key} (${aws_instance.node[each.key].id}) fails EC2's instance or system status check."
  namespace           = "AWS/EC2"
  metric_name         = "StatusCheckFailed"
  dimensions          = { InstanceId = aws_instance.node[each.key].id }
  statistic           = "Maximum"
  period              = 60
  evaluation_periods  = 2
  comparison_operator = "GreaterThanOrEqualToThreshold"
  threshold           = 1
  # A node that reports nothing is as bad as one that fails.
  treat_missing_data = "breaching"
  alarm_actions      = local.alarm_actions
  ok_actions         = local.alarm_actions
}
