# The relays' instance role may read one secret and finish its own group's scale-in hook:
# nothing else.

data "aws_iam_policy_document" "ec2_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "relay" {
  name_prefix        = "${var.name}-relay-"
  assume_role_policy = data.aws_iam_policy_document.ec2_assume.json
  tags               = local.tags
}

data "aws_iam_policy_document" "relay" {
  statement {
    sid       = "ReadRelaySecret"
    actions   = ["secretsmanager:GetSecretValue"]
    resources = [var.secret_arn]
  }

  dynamic "statement" {
    for_each = var.secret_kms_key_arn == null ? [] : [var.secret_kms_key_arn]
    content {
      sid       = "DecryptRelaySecret"
      actions   = ["kms:Decrypt"]
      resources = [statement.value]
    }
  }

  # Each relay publishes, and at scale-in removes, its own A record under the relays' domain.
  dynamic "statement" {
    for_each = var.relay_names == null ? [] : [var.relay_names]
    content {
      sid       = "PublishOwnName"
      actions   = ["route53:ChangeResourceRecordSets"]
      resources = ["arn:aws:route53:::hostedzone/${statement.value.zone_id}"]
      condition {
        test     = "ForAllValues:StringLike"
        variable = "route53:ChangeResourceRecordSetsNormalizedRecordNames"
        values   = ["*.${statement.value.domain}"]
      }
      condition {
        test     = "ForAllValues:StringEquals"
        variable = "route53:ChangeResourceRecordSetsRecordTypes"
        values   = ["A"]
      }
    }
  }

  # The drain handler (cloud-init) tells the group when the relay has drained.
  statement {
    sid       = "FinishScaleIn"
    actions   = ["autoscaling:CompleteLifecycleAction", "autoscaling:RecordLifecycleActionHeartbeat"]
    resources = [aws_autoscaling_group.relays.arn]
  }
}

resource "aws_iam_role_policy" "relay" {
  name_prefix = "${var.name}-relay-"
  role        = aws_iam_role.relay.id
  policy      = data.aws_iam_policy_document.relay.json
}

resource "aws_iam_instance_profile" "relay" {
  name_prefix = "${var.name}-relay-"
  role        = aws_iam_role.relay.name
  tags        = local.tags
}
