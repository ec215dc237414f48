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
